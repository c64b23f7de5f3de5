//! Where and how to reach a registry: the target, TLS, credentials. Shared by the build
//! cache (`--cache`) and by publish and pull.

use crate::{Client, Credentials, RegistryConfig};
use cairn_steps::Error;
use std::time::Duration;

/// Where and how to publish or pull.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `host[:port]/namespace`.
    pub target: String,
    /// Plain HTTP for this registry (no TLS).
    pub insecure: bool,
    /// Explicit credentials (`--username` with `--password-stdin`); else looked up.
    pub credentials: Option<Credentials>,
    pub tag: String,
    pub chunk_size: u64,
    pub parallel: usize,
    /// Create the Harbor project when the registry says it does not exist.
    pub create_project: bool,
    /// PEM CA certificates to trust for this registry (`--ca-file`, else the cluster's
    /// `registry.ca_file` when the registry is the cluster's).
    pub ca_file: Option<std::path::PathBuf>,
}

impl RegistryOptions {
    pub fn client(&self) -> Result<(Client, String), Error> {
        let (host, namespace) = crate::split_target(&self.target)?;
        let credentials = match &self.credentials {
            Some(c) => Some(c.clone()),
            None => crate::CredentialSources::from_env()
                .lookup(&host)
                .map_err(Error::msg)?,
        };
        let ca_pem = match &self.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| Error::at(format!("CA file {}", path.display()), e))?,
            ),
            None => None,
        };
        let client = Client::new(RegistryConfig {
            host,
            insecure: self.insecure,
            credentials,
            backoff: Duration::from_millis(200),
            ca_pem,
        })
        .map_err(|e| {
            Error::from(e).context(format!(
                "CA file {}",
                self.ca_file
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            ))
        })?;
        Ok((client, namespace))
    }
}
