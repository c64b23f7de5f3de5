//! Cairn's OCI distribution client (spec 1.1, as Harbor serves it): authentication
//! (anonymous, Basic, Bearer tokens), credentials from the usual files and helpers, push
//! and pull between the store and a repository, every byte verified by digest.
//!
//! It is also the shared build cache (`cache`), plugged into the step runner as its
//! substituter by the command line.
//!
//! Architecture invariant: credentials never appear in messages, logs or errors.

pub mod auth;
pub mod cache;
pub mod client;
pub mod credentials;
pub mod error;
pub mod options;
pub mod pull;
pub mod push;
pub mod signatures;

pub use client::{Client, RegistryConfig};
pub use credentials::{CredentialSources, Credentials};
pub use error::RegistryError;
pub use options::RegistryOptions;
pub use push::{Descriptor, PushOptions, PushReport};

/// Progress of each blob of a push or pull (for per-blob progress bars).
pub trait BlobProgress: Sync {
    /// A blob starts (or starts again after a failed attempt): `size` bytes to go.
    fn start(&self, _digest: &cairn_formats::Digest, _size: u64) {}
    fn bytes(&self, _digest: &cairn_formats::Digest, _n: u64) {}
    fn done(&self, _digest: &cairn_formats::Digest) {}
}

/// No progress display.
pub struct NoProgress;
impl BlobProgress for NoProgress {}

/// A bar per blob, on a terminal.
impl BlobProgress for cairn_steps::progress::BlobBars {
    fn start(&self, digest: &cairn_formats::Digest, size: u64) {
        cairn_steps::progress::BlobBars::start(self, digest, size)
    }
    fn bytes(&self, digest: &cairn_formats::Digest, n: u64) {
        cairn_steps::progress::BlobBars::bytes(self, digest, n)
    }
    fn done(&self, digest: &cairn_formats::Digest) {
        cairn_steps::progress::BlobBars::done(self, digest)
    }
}

/// Creates a Harbor project (private); Ok(false) when it already exists.
pub fn harbor_create_project(client: &Client, name: &str) -> Result<bool, RegistryError> {
    let (status, body) = client.api_post_json(
        "/api/v2.0/projects",
        &serde_json::json!({"project_name": name, "metadata": {"public": "false"}}),
    )?;
    match status {
        201 => Ok(true),
        409 => Ok(false),
        _ => Err(RegistryError::from_body(
            "POST",
            &format!("{}/api/v2.0/projects", client.config.host),
            status,
            &body,
        )),
    }
}

/// `host[:port]/namespace` (`harbor.lan/homelab`) split into the registry and namespace.
pub fn split_target(target: &str) -> Result<(String, String), RegistryError> {
    let t = target
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (host, ns) = t.split_once('/').unwrap_or((t, ""));
    let valid = |s: &str| {
        !s.is_empty()
            && s.split('/').all(|p| {
                !p.is_empty()
                    && p.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
    };
    if host.is_empty() || host.contains(char::is_whitespace) || (!ns.is_empty() && !valid(ns)) {
        return Err(RegistryError::other(format!(
            "{target:?} is not a registry and namespace like harbor.example.lan/homelab (lowercase names)"
        )));
    }
    Ok((host.to_string(), ns.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split() {
        assert_eq!(
            split_target("harbor.lan/homelab").unwrap(),
            ("harbor.lan".into(), "homelab".into())
        );
        assert_eq!(
            split_target("127.0.0.1:5000/a/b/").unwrap(),
            ("127.0.0.1:5000".into(), "a/b".into())
        );
        assert_eq!(
            split_target("reg:5000").unwrap(),
            ("reg:5000".into(), "".into())
        );
        assert!(split_target("harbor.lan/Home").is_err());
        assert!(split_target("").is_err());
    }
}
