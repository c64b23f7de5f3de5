//! What every build step shares, below every pipeline stage: where things are (`Context`),
//! errors that carry what was being done (`Error`), the builders' version that is part of
//! every step key (`BUILDER_VERSION`), the step runner (`step`: key, action cache,
//! substituter, build, record) and progress bars (`progress`).
//!
//! It owns no step itself and knows nothing of OS images, nodes or registries: the stage
//! crates (`cairn-inputs`, `cairn-os`, `cairn-node`, `cairn-deliver`) build on it, and the
//! registry's build cache plugs in as a [`step::Substituter`], so no stage crate sits on the
//! registry client.

pub mod error;
pub mod progress;
pub mod step;

pub use error::{Cause, Error, Kind};
pub use step::{Output, Step, Substituter};

use std::path::PathBuf;

/// The version of Cairn's builders; part of every step key, so a change of any builder's
/// output is a change of this number.
pub const BUILDER_VERSION: &str = "cairn-builders-8";

/// Where things are, decided once by the command line.
#[derive(Debug, Clone)]
pub struct Context {
    /// The project root (holds `images/`, `nodes/`, `inputs.lock`).
    pub root: PathBuf,
    /// The store (`artifacts/` by default).
    pub store: PathBuf,
    /// Download cache shared between checkouts.
    pub cache: PathBuf,
    /// Show progress bars (on a terminal, unless `--quiet` or `--json`).
    pub progress: bool,
    /// Where steps missing from the store may be found built (`--cache`), if anywhere.
    pub substituter: Option<std::sync::Arc<dyn Substituter>>,
}

impl Context {
    /// The default download cache: `$CAIRN_CACHE_DIR`, else `$XDG_CACHE_HOME/cairn`, else
    /// `~/.cache/cairn`.
    pub fn default_cache() -> PathBuf {
        if let Some(dir) = std::env::var_os("CAIRN_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("cairn");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/cairn")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("inputs.lock")
    }

    /// Opens the store, saying so on stderr while another cairn process holds its lock.
    pub fn open_store(&self) -> Result<cairn_store::Store, Error> {
        Ok(cairn_store::Store::open(&self.store, || {
            eprintln!(
                "waiting for another cairn process to release {}",
                self.store.join(".lock").display()
            )
        })?)
    }
}
