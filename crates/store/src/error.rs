use cairn_formats::Digest;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum StoreError {
    Io { path: PathBuf, err: std::io::Error },
    Corrupt { path: PathBuf, what: String },
    MissingBlob { digest: Digest },
    DigestMismatch { expected: Digest, found: Digest },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            StoreError::Corrupt { path, what } => {
                write!(f, "{} is corrupt: {what}", path.display())
            }
            StoreError::MissingBlob { digest } => write!(
                f,
                "blob {digest} is missing from the store: rebuild, or run `cargo xtask store verify`"
            ),
            StoreError::DigestMismatch { expected, found } => {
                write!(f, "sha256 mismatch: expected {expected}, got {found}")
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}
