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

impl RegistryError {
    /// What kind of failure this is, for the callers that act on one.
    pub fn kind(&self) -> cairn_steps::Kind {
        use cairn_steps::Kind;
        match self {
            RegistryError::Transport { .. } => Kind::Network,
            RegistryError::Digest { .. } => Kind::DigestMismatch,
            RegistryError::Http { status: 404, .. } => Kind::NotFound,
            _ => Kind::Other,
        }
    }
}

/// Kept typed, as the cause of a step's error, with its kind.
impl From<RegistryError> for cairn_steps::Error {
    fn from(e: RegistryError) -> cairn_steps::Error {
        cairn_steps::Error::classified(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_steps::Kind;

    #[test]
    fn a_registry_error_keeps_its_type_and_kind_in_a_step_error() {
        let refused = RegistryError::Transport {
            method: "GET".into(),
            url: "http://127.0.0.1:1/v2/".into(),
            message: "connection refused".into(),
        };
        let e = cairn_steps::Error::from(refused.clone()).context("pulling pi-worker");
        assert_eq!(e.kind(), Kind::Network);
        assert_eq!(
            e.to_string(),
            "pulling pi-worker: GET http://127.0.0.1:1/v2/: connection refused"
        );
        let source = std::error::Error::source(&e).expect("typed source");
        assert_eq!(source.downcast_ref::<RegistryError>(), Some(&refused));
        let missing = RegistryError::Http {
            method: "GET".into(),
            url: "u".into(),
            status: 404,
            message: "MANIFEST_UNKNOWN".into(),
        };
        assert_eq!(cairn_steps::Error::from(missing).kind(), Kind::NotFound);
        let bad = RegistryError::Digest {
            what: "blob".into(),
            expected: "a".into(),
            found: "b".into(),
        };
        assert_eq!(cairn_steps::Error::from(bad).kind(), Kind::DigestMismatch);
        assert_eq!(
            cairn_steps::Error::from(RegistryError::other("x")).kind(),
            Kind::Other
        );
    }
}
