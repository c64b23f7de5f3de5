//! Delivery, the last stage: artifacts leave the store. `publish` and `pull` move images and
//! nodes to and from a registry; `flash` writes a node's card (`card`: the device);
//! `bundle` exports and imports everything as one file; `verify` rebuilds an artifact and
//! compares it with the store's or a registry's. What vouches for an artifact (SBOMs,
//! attestations, signature records) is `cairn-supply`'s.
//!
//! It reads what the earlier stages built (and builds it through them when missing); it
//! never changes how an artifact is made, so nothing here can change a digest.

pub mod bundle;
pub mod card;
pub mod flash;
pub mod publish;
pub mod verify;
