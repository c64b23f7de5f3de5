use std::fmt;

/// What went wrong talking to a registry; every variant names the URL or registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// The registry answered with an error status (its error envelope, when it sent one).
    Http {
        method: String,
        url: String,
        status: u16,
        message: String,
    },
    /// The connection failed, after the retries idempotent requests get.
    Transport {
        method: String,
        url: String,
        message: String,
    },
    /// Login or permission problems, with what to do.
    Auth {
        registry: String,
        message: String,
    },
    /// Bytes whose digest is not the one expected; nothing was stored.
    Digest {
        what: String,
        expected: String,
        found: String,
    },
    Other(String),
}

impl RegistryError {
    /// From a status and body: the OCI error envelope's codes and messages, else the text.
    pub fn from_body(method: &str, url: &str, status: u16, body: &[u8]) -> RegistryError {
        let mut message = String::new();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            for e in v["errors"].as_array().into_iter().flatten() {
                if !message.is_empty() {
                    message.push_str("; ");
                }
                message.push_str(e["code"].as_str().unwrap_or("ERROR"));
                if let Some(m) = e["message"].as_str() {
                    message.push_str(": ");
                    message.push_str(m);
                }
            }
        }
        if message.is_empty() {
            message = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(300)
                .collect();
        }
        match status {
            412 => {
                message = format!(
                    "{message} (HTTP 412: the tag is immutable in this project; push under a new tag or lift the immutability rule)"
                )
            }
            413 => {
                message = format!(
                    "{message} (HTTP 413: the body is too large for the registry or a proxy in front of it; lower --chunk-size)"
                )
            }
            _ => {}
        }
        RegistryError::Http {
            method: method.into(),
            url: url.into(),
            status,
            message,
        }
    }

    pub fn other(msg: impl Into<String>) -> RegistryError {
        RegistryError::Other(msg.into())
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Http {
                method,
                url,
                status,
                message,
            } => write!(f, "{method} {url}: HTTP {status}: {message}"),
            RegistryError::Transport {
                method,
                url,
                message,
            } => write!(f, "{method} {url}: {message}"),
            RegistryError::Auth { registry, message } => write!(f, "{registry}: {message}"),
            RegistryError::Digest {
                what,
                expected,
                found,
            } => write!(
                f,
                "{what}: digest mismatch: expected {expected}, got {found}; nothing was stored"
            ),
            RegistryError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RegistryError {}

impl From<cairn_store::StoreError> for RegistryError {
    fn from(e: cairn_store::StoreError) -> Self {
        RegistryError::Other(e.to_string())
    }
}
