use std::fmt;
use std::path::{Path, PathBuf};

/// A spec that cannot be read or is invalid. Displays as
/// `images/haproxy.toml:3:9: key `arches`: unknown arch "riscv64" ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: PathBuf,
    /// 1-based line and column, when the error points into the file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key the error is about, when known.
    pub key: Option<String>,
    pub message: String,
}

impl SpecError {
    pub(crate) fn io(path: &Path, err: std::io::Error) -> SpecError {
        SpecError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: format!("cannot read: {err}"),
        }
    }

    /// An error about the bytes `span` of `source`, with the key found there.
    pub(crate) fn at(
        path: &Path,
        source: &str,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> SpecError {
        let message = message.into();
        let Some(span) = span else {
            return SpecError {
                file: path.to_path_buf(),
                line: None,
                column: None,
                key: None,
                message,
            };
        };
        let start = span.start.min(source.len());
        let before = &source[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let key = key_at(source, start);
        SpecError {
            file: path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            key,
            message,
        }
    }

    pub(crate) fn from_toml(path: &Path, source: &str, err: &toml::de::Error) -> SpecError {
        SpecError::at(path, source, err.span(), err.message().trim().to_string())
    }
}

/// The dotted key of the `key = value` line at byte `offset`, prefixed with the table
/// header above it (`network.address`, `config.user`, `users[].uid`).
fn key_at(source: &str, offset: usize) -> Option<String> {
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[offset..]
        .find('\n')
        .map_or(source.len(), |i| offset + i);
    let line = source[line_start..line_end].trim();
    let table = source[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            let array = l.starts_with("[[");
            let name = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if array { format!("{name}[]") } else { name }
        });
    let own = if line.starts_with('[') {
        None
    } else if let Some((k, _)) = line.split_once('=').filter(|(k, _)| {
        !k.contains('"')
            || (k.trim().len() >= 2 && k.trim().starts_with('"') && k.trim().ends_with('"'))
    }) {
        Some(k.trim().trim_matches('"').to_string()).filter(|k| !k.is_empty())
    } else {
        // Inside a multi-line array: the key is on the line that opened it.
        source[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .take_while(|l| !l.starts_with('['))
            .find(|l| l.contains('=') && !l.starts_with('"'))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().to_string())
    };
    match (table, own) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}
