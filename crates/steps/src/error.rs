use std::fmt;

/// An error with the chain of what was being done, printed as
/// `building haproxy: fetching libc6: sha256 mismatch: ...`.
#[derive(Debug)]
pub struct Error {
    context: Vec<String>,
    message: String,
}

impl Error {
    pub fn msg(message: impl Into<String>) -> Error {
        Error {
            context: Vec::new(),
            message: message.into(),
        }
    }

    pub fn context(mut self, what: impl Into<String>) -> Error {
        self.context.push(what.into());
        self
    }

    /// Whether a disk filled up: the message holds Linux's `ENOSPC` (28) as Rust prints
    /// an I/O error, `No space left on device (os error 28)`. Errors keep only their text
    /// on the way up, so the text is what is looked at.
    pub fn is_out_of_space(&self) -> bool {
        self.message.contains("(os error 28)")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.context.iter().rev() {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

macro_rules! from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::msg(e.to_string())
            }
        }
    )*};
}

from_display!(
    cairn_project::SpecError,
    cairn_store::StoreError,
    cairn_debian::DebError,
    cairn_debian::ReleaseError,
    cairn_debian::ResolveError,
    cairn_registry::RegistryError
);

/// Adds context to a result.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T, E: Into<Error>> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| e.into().context(what()))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::msg(e.to_string())
    }
}
