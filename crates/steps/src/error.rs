use cairn_debian::{DebError, ReleaseError, ResolveError};
use cairn_project::SpecError;
use cairn_store::StoreError;
use std::fmt;

/// An error with the chain of what was being done, printed as
/// `building haproxy: fetching libc6: sha256 mismatch: ...`.
///
/// The cause keeps its type (an I/O error with its path, a store, spec or Debian error, or
/// a crate's above this one, such as the registry client's, with the kind it says it is) and is the error's `source()`; [`Error::kind`] says what kind of failure it is
/// for the callers that act on one (a full disk, a missing file, bad bytes, the network).
#[derive(Debug)]
pub struct Error {
    context: Vec<String>,
    cause: Cause,
}

/// What failed, with its data. Display gives the text a user reads after the context.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// A failure that is only its message (bad input, a refused request).
    #[error("{0}")]
    Message(String),
    /// An operation on something named (a path, or the operation and its path) that
    /// failed with a typed error: an I/O error most often, kept as it came.
    #[error("{what}: {source}")]
    At {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An I/O error with nothing to name (the caller adds context).
    #[error("{0}")]
    BareIo(#[source] std::io::Error),
    /// Another typed error with nothing to name, kept as it came.
    #[error("{0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Something named that does not exist (a file, a URL, a tag).
    #[error("{0}")]
    NotFound(String),
    /// Bytes whose digest is not the one pinned or announced.
    #[error("{message}")]
    DigestMismatch { message: String },
    /// A server could not be reached or the connection broke.
    #[error("{message}")]
    Network { url: String, message: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A typed error of a crate above this one (the registry client's), with the kind
    /// that crate gave it when it was converted.
    #[error("{source}")]
    Classified {
        kind: Kind,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The kinds of failure a caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A disk filled up (`ENOSPC`): free space or point the store elsewhere.
    DiskFull,
    /// A file, URL, blob or tag that is not there.
    NotFound,
    /// Bytes that are not the ones a digest pins.
    DigestMismatch,
    /// A server that could not be reached, or a connection that broke.
    Network,
    Other,
}

impl Error {
    pub fn msg(message: impl Into<String>) -> Error {
        Cause::Message(message.into()).into()
    }

    /// `what` (a path, or an operation and its path: `writing /x`) failed with `source`,
    /// kept typed; printed `what: source`.
    pub fn at(
        what: impl fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Cause::At {
            what: what.to_string(),
            source: source.into(),
        }
        .into()
    }

    /// A typed error with nothing to add (the caller adds context); printed as it prints.
    pub fn other(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Cause::Other(source.into()).into()
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Cause::NotFound(message.into()).into()
    }

    pub fn digest_mismatch(message: impl Into<String>) -> Error {
        Cause::DigestMismatch {
            message: message.into(),
        }
        .into()
    }

    /// `url` could not be reached or its connection broke; `message` says so.
    pub fn network(url: impl Into<String>, message: impl Into<String>) -> Error {
        Cause::Network {
            url: url.into(),
            message: message.into(),
        }
        .into()
    }

    /// A typed error of a crate above this one, of the kind it says: how such a crate
    /// implements `From<ItsError> for Error`.
    pub fn classified(
        kind: Kind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Cause::Classified {
            kind,
            source: source.into(),
        }
        .into()
    }

    pub fn context(mut self, what: impl Into<String>) -> Error {
        self.context.push(what.into());
        self
    }

    pub fn cause(&self) -> &Cause {
        &self.cause
    }

    /// What kind of failure this is, read from the cause's type (never from its text).
    pub fn kind(&self) -> Kind {
        match &self.cause {
            Cause::At { source, .. } | Cause::Other(source) => boxed_kind(source.as_ref()),
            Cause::BareIo(e) => io_kind(e),
            Cause::Store(e) => store_kind(e),
            Cause::Deb(DebError::Io { err, .. }) => io_kind(err),
            Cause::Classified { kind, .. } => *kind,
            Cause::NotFound(_) => Kind::NotFound,
            Cause::DigestMismatch { .. } => Kind::DigestMismatch,
            Cause::Network { .. } => Kind::Network,
            Cause::Message(_)
            | Cause::Spec(_)
            | Cause::Deb(_)
            | Cause::Release(_)
            | Cause::Resolve(_) => Kind::Other,
        }
    }

    /// Whether a disk filled up.
    pub fn is_out_of_space(&self) -> bool {
        self.kind() == Kind::DiskFull
    }
}

/// The kind of a boxed source, by its type or, for a wrapper (a squashfs or HTTP
/// library's error), by the first typed error down its chain of sources.
fn boxed_kind(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Kind {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = next {
        let kind = if let Some(e) = e.downcast_ref::<std::io::Error>() {
            io_kind(e)
        } else if let Some(e) = e.downcast_ref::<StoreError>() {
            store_kind(e)
        } else if let Some(e) = e.downcast_ref::<Error>() {
            e.kind()
        } else if let Some(DebError::Io { err, .. }) = e.downcast_ref::<DebError>() {
            io_kind(err)
        } else {
            Kind::Other
        };
        if kind != Kind::Other {
            return kind;
        }
        next = e.source();
    }
    Kind::Other
}

fn store_kind(e: &StoreError) -> Kind {
    match e {
        StoreError::Io { err, .. } => io_kind(err),
        StoreError::MissingBlob { .. } => Kind::NotFound,
        StoreError::DigestMismatch { .. } => Kind::DigestMismatch,
        StoreError::Corrupt { .. } => Kind::Other,
    }
}

fn io_kind(e: &std::io::Error) -> Kind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::StorageFull | K::QuotaExceeded => Kind::DiskFull,
        K::NotFound => Kind::NotFound,
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::TimedOut
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown
        | K::BrokenPipe => Kind::Network,
        _ => Kind::Other,
    }
}

impl From<Cause> for Error {
    fn from(cause: Cause) -> Error {
        Error {
            context: Vec::new(),
            cause,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.context.iter().rev() {
            write!(f, "{c}: ")?;
        }
        write!(f, "{}", self.cause)
    }
}

/// The source is the cause's typed error (its text is already part of this error's own).
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Message(_)
            | Cause::NotFound(_)
            | Cause::DigestMismatch { .. }
            | Cause::Network { .. } => None,
            Cause::At { .. } | Cause::BareIo(_) | Cause::Other(_) => {
                std::error::Error::source(&self.cause)
            }
            Cause::Spec(e) => Some(e),
            Cause::Store(e) => Some(e),
            Cause::Deb(e) => Some(e),
            Cause::Release(e) => Some(e),
            Cause::Resolve(e) => Some(e),
            Cause::Classified { source, .. } => Some(source.as_ref()),
        }
    }
}

macro_rules! from_cause {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Cause::from(e).into()
            }
        }
    )*};
}

from_cause!(SpecError, StoreError, DebError, ReleaseError, ResolveError);

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Cause::BareIo(e).into()
    }
}

/// Adds context to a result.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T, E: Into<Error>> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_formats::Digest;
    use std::io;

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(28)
    }

    #[test]
    fn a_full_disk_is_a_kind_wherever_it_is_carried() {
        let direct = Error::at("/store/tmp/x", enospc()).context("building haproxy");
        assert_eq!(direct.kind(), Kind::DiskFull);
        assert_eq!(
            direct.to_string(),
            "building haproxy: /store/tmp/x: No space left on device (os error 28)"
        );
        let through_store = Error::from(StoreError::Io {
            path: "/store/blobs".into(),
            err: enospc(),
        });
        assert_eq!(through_store.kind(), Kind::DiskFull);
        let through_deb = Error::from(DebError::Io {
            package: "libc6".into(),
            err: enospc(),
        });
        assert!(through_deb.is_out_of_space());
        // A library's error that wraps the I/O error as its source.
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("squashfs: write failed")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = Error::at("writing the squashfs", Wrapper(enospc()));
        assert_eq!(wrapped.kind(), Kind::DiskFull);
        assert_eq!(
            Error::at("writing the squashfs", Wrapper(io::Error::other("x"))).kind(),
            Kind::Other
        );
        // The text alone is no longer read: a message quoting ENOSPC is not a full disk.
        let quoted = Error::msg("No space left on device (os error 28)");
        assert_eq!(quoted.kind(), Kind::Other);
    }

    #[test]
    fn not_found_digest_mismatch_and_network_are_kinds() {
        let missing = Error::from(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(missing.kind(), Kind::NotFound);
        assert_eq!(
            Error::from(StoreError::MissingBlob {
                digest: Digest::of(b"a")
            })
            .kind(),
            Kind::NotFound
        );
        let mismatch = Error::from(StoreError::DigestMismatch {
            expected: Digest::of(b"a"),
            found: Digest::of(b"b"),
        });
        assert_eq!(mismatch.kind(), Kind::DigestMismatch);
        assert_eq!(
            Error::digest_mismatch("libc6: sha256 mismatch").kind(),
            Kind::DigestMismatch
        );
        // A crate above (the registry client) says what its error is; carried as context
        // or as another error's source, it stays that kind.
        let refused = Error::classified(Kind::Network, io::Error::other("connection refused"));
        assert_eq!(refused.kind(), Kind::Network);
        assert_eq!(refused.to_string(), "connection refused");
        let carried = Error::at("pulling x", refused);
        assert_eq!(carried.kind(), Kind::Network);
        assert_eq!(
            Error::network("http://127.0.0.1:1/x", "connection failed").kind(),
            Kind::Network
        );
        assert_eq!(Error::msg("bad input").kind(), Kind::Other);
    }

    #[test]
    fn the_source_is_the_typed_cause() {
        let e = Error::at("/x", enospc()).context("writing the card");
        let source = std::error::Error::source(&e).expect("an I/O error has a source");
        let io = source.downcast_ref::<io::Error>().expect("the io::Error");
        assert_eq!(io.raw_os_error(), Some(28));
        let store = Error::from(StoreError::MissingBlob {
            digest: Digest::of(b"a"),
        });
        assert!(
            std::error::Error::source(&store)
                .and_then(|s| s.downcast_ref::<StoreError>())
                .is_some()
        );
        assert!(std::error::Error::source(&Error::msg("x")).is_none());
    }
}
