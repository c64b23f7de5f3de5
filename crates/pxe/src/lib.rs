//! Serving nodes over the network: a small HTTP file server over store blobs (`http`, also
//! what boot tests and PXE boots fetch from), proxy DHCP (`dhcp`), read-only TFTP (`tftp`),
//! and `serve-pxe`, which ties them together for a LAN's PXE nodes (`server`).
//!
//! It serves what the store holds and never builds: the command line builds or pulls the
//! nodes first. Nothing is reachable but the routes and files it is given.

pub mod dhcp;
pub mod http;
pub mod server;
pub mod tftp;
