//! The supply chain: what says where an artifact came from and who vouches for it. `sbom`
//! (an SPDX 2.3 document per image or node, from the lock alone), `attest` (in-toto
//! provenance and the SBOM as cosign attestations beside a published manifest), `signed`
//! (an artifact's signatures kept in the store as `NAME.sig`, and the check a pull or an
//! import makes against `--verify-key`).
//!
//! It reads the lock, the store and the registry; it never changes an artifact, so nothing
//! here can change a digest. `cairn-deliver` moves artifacts and calls it.

pub mod attest;
pub mod sbom;
pub mod signed;
