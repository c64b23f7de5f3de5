//! Downloads into the content-addressed cache shared between checkouts
//! (`$XDG_CACHE_HOME/cairn/sha256/<hex>`): parallel, verified by size and sha256, written
//! by temp file and rename, so a failed or interrupted download leaves nothing behind.

use cairn_formats::{Digest, HashingWriter};
use cairn_steps::Error;
use cairn_steps::progress;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// One file to download: `url`, expected to hash to `sha256` (and to be `size` bytes, when
/// the pin knows the size).
#[derive(Debug, Clone)]
pub struct Download {
    /// What the user knows it as (`libc6 2.41-12 arm64`).
    pub name: String,
    pub url: String,
    pub sha256: Digest,
    pub size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

const ATTEMPTS: u32 = 3;
const PARALLEL: usize = 4;
/// The name prefix of partial downloads in the cache's `tmp/`.
const PART: &str = ".part-";

impl Cache {
    /// The cache at `dir`. Partial downloads a killed process left in its `tmp/` are
    /// removed here; ones another process is writing are locked and kept.
    pub fn new(dir: &Path) -> Cache {
        cairn_store::sweep_temp_files(&dir.join("tmp"), PART);
        Cache {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Downloads every item not yet cached, `PARALLEL` at a time, with one progress bar.
    pub fn fetch_all(&self, items: &[Download], show_progress: bool) -> Result<(), Error> {
        let mut todo: Vec<&Download> = items.iter().filter(|d| !self.has(&d.sha256)).collect();
        todo.sort_by(|a, b| a.url.cmp(&b.url));
        todo.dedup_by(|a, b| a.sha256 == b.sha256);
        if todo.is_empty() {
            return Ok(());
        }
        let total: u64 = todo.iter().filter_map(|d| d.size).sum();
        let bar = progress::bytes(show_progress, total, "downloading");
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(todo.len()) {
                s.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = todo.get(i) else { break };
                        if let Err(e) = self.fetch(item, &|n| bar.inc(n)) {
                            failed.store(true, Ordering::Relaxed);
                            errors.lock().unwrap().push(e);
                        }
                    }
                });
            }
        });
        bar.finish_and_clear();
        let mut errors = errors.into_inner().unwrap();
        match errors.len() {
            0 => Ok(()),
            _ => Err(errors.swap_remove(0)),
        }
    }

    /// Downloads one item into the cache (retrying transient failures) and returns its path.
    pub fn fetch(&self, item: &Download, on_bytes: &dyn Fn(u64)) -> Result<PathBuf, Error> {
        let path = self.path(&item.sha256);
        if path.is_file() {
            return Ok(path);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_fetch(item, on_bytes) {
                Ok(()) => return Ok(path),
                Err(FetchError::Transient(e)) if attempt < ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                    let _ = e;
                }
                Err(FetchError::Transient(e) | FetchError::Fatal(e)) => {
                    return Err(e.context(format!("fetching {} from {}", item.name, item.url)));
                }
            }
        }
    }

    fn try_fetch(&self, item: &Download, on_bytes: &dyn Fn(u64)) -> Result<(), FetchError> {
        let tmp_dir = self.dir.join("tmp");
        let store_dir = self.dir.join("sha256");
        for d in [&tmp_dir, &store_dir] {
            std::fs::create_dir_all(d).map_err(|e| FetchError::Fatal(Error::at(d.display(), e)))?;
        }
        let mut reader = open_url(&item.url)?;
        let tmp = cairn_store::shared_temp_file(&tmp_dir, PART)
            .map_err(|e| FetchError::Fatal(Error::at(tmp_dir.display(), e)))?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp));
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(FetchError::Transient(Error::network(
                        &item.url,
                        format!(
                            "truncated download: the connection dropped after {}{} bytes ({e})",
                            w.n_bytes(),
                            item.size.map_or_else(String::new, |s| format!(" of {s}"))
                        ),
                    )));
                }
            };
            if let Some(size) = item.size {
                if w.n_bytes() + n as u64 > size {
                    return Err(FetchError::Fatal(Error::msg(format!(
                        "the server sent more than the {size} bytes the lock pins: the mirror serves a different file; check the mirror or run `cargo xtask lock`"
                    ))));
                }
            }
            w.write_all(&buf[..n]).map_err(|e| {
                FetchError::Fatal(Error::at(format!("writing {}", tmp_dir.display()), e))
            })?;
            on_bytes(n as u64);
        }
        let (buffered, digest, n_bytes) = w.finish();
        if let Some(size) = item.size {
            if n_bytes != size {
                return Err(FetchError::Transient(Error::msg(format!(
                    "truncated download: the server sent {n_bytes} of {size} bytes"
                ))));
            }
        }
        if digest != item.sha256 {
            return Err(FetchError::Fatal(Error::digest_mismatch(format!(
                "sha256 mismatch: expected {}, got {digest}: the mirror serves a different file than the lock pins; check the mirror or run `cargo xtask lock`",
                item.sha256
            ))));
        }
        let tmp = buffered
            .into_inner()
            .map_err(|e| FetchError::Fatal(Error::other(e)))?;
        cairn_store::readable(tmp.as_file()).map_err(|e| FetchError::Fatal(Error::other(e)))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| FetchError::Fatal(Error::other(e)))?;
        tmp.persist(self.path(&item.sha256))
            .map_err(|e| FetchError::Fatal(Error::other(e)))?;
        Ok(())
    }
}

impl Cache {
    /// Downloads a URL whose hash is not known yet (to pin it), into the cache; returns its
    /// digest and size.
    /// Copies a local file into the cache (as `nix-prefetch-url file://...` would), hashing
    /// it on the way, and returns its digest and size.
    pub fn add_file(&self, path: &Path) -> Result<(Digest, u64), Error> {
        let err = |e: io::Error| Error::at(path.display(), e);
        let mut src = std::fs::File::open(path).map_err(err)?;
        let tmp_dir = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::at(tmp_dir.display(), e))?;
        std::fs::create_dir_all(self.dir.join("sha256"))
            .map_err(|e| Error::at(self.dir.display(), e))?;
        let tmp = cairn_store::shared_temp_file(&tmp_dir, PART)
            .map_err(|e| Error::at(tmp_dir.display(), e))?;
        let mut w = HashingWriter::new(io::BufWriter::new(tmp));
        io::copy(&mut src, &mut w).map_err(err)?;
        let (buffered, digest, size) = w.finish();
        let tmp = buffered.into_inner().map_err(|e| Error::other(e))?;
        cairn_store::readable(tmp.as_file()).map_err(|e| Error::other(e))?;
        tmp.as_file().sync_all().map_err(|e| Error::other(e))?;
        tmp.persist(self.path(&digest))
            .map_err(|e| Error::other(e))?;
        Ok((digest, size))
    }

    pub fn fetch_unpinned(&self, url: &str, name: &str) -> Result<(Digest, u64), Error> {
        let ctx = || format!("fetching {name} from {url}");
        let tmp_dir = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::at(tmp_dir.display(), e))?;
        std::fs::create_dir_all(self.dir.join("sha256"))
            .map_err(|e| Error::at(self.dir.display(), e))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = open_url(url).and_then(|mut reader| {
                let tmp = cairn_store::shared_temp_file(&tmp_dir, PART)
                    .map_err(|e| FetchError::Fatal(Error::other(e)))?;
                let mut w = HashingWriter::new(io::BufWriter::new(tmp));
                io::copy(&mut reader, &mut w)
                    .map_err(|e| FetchError::Transient(Error::at("connection failed", e)))?;
                let (buffered, digest, size) = w.finish();
                let tmp = buffered
                    .into_inner()
                    .map_err(|e| FetchError::Fatal(Error::other(e)))?;
                cairn_store::readable(tmp.as_file())
                    .map_err(|e| FetchError::Fatal(Error::other(e)))?;
                tmp.as_file()
                    .sync_all()
                    .map_err(|e| FetchError::Fatal(Error::other(e)))?;
                tmp.persist(self.path(&digest))
                    .map_err(|e| FetchError::Fatal(Error::other(e)))?;
                Ok((digest, size))
            });
            match result {
                Ok(r) => return Ok(r),
                Err(FetchError::Transient(_)) if attempt < ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)))
                }
                Err(FetchError::Transient(e) | FetchError::Fatal(e)) => {
                    return Err(e.context(ctx()));
                }
            }
        }
    }
}

enum FetchError {
    /// Worth another try: a dropped connection, a 5xx, a short body.
    Transient(Error),
    Fatal(Error),
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // ureq has no idle timeout: bound a whole body so a stalled server cannot hang a build.
        .timeout_recv_body(Some(Duration::from_secs(3600)))
        .build()
        .into()
}

fn open_url(url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
    if let Some(path) = url.strip_prefix("file://") {
        return match std::fs::File::open(path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FetchError::Fatal(
                Error::not_found(format!("{path} does not exist")),
            )),
            Err(e) => Err(FetchError::Fatal(Error::at(path, e))),
        };
    }
    match agent().get(url).call() {
        Ok(resp) => Ok(Box::new(resp.into_body().into_with_config().limit(u64::MAX).reader())),
        Err(ureq::Error::StatusCode(code)) if code >= 500 || code == 429 => {
            Err(FetchError::Transient(Error::msg(format!("the server answered HTTP {code}"))))
        }
        Err(ureq::Error::StatusCode(404)) => Err(FetchError::Fatal(Error::not_found(
            "the server answered 404 not found: the mirror does not have this file (an old snapshot? run `cargo xtask lock`)".to_string(),
        ))),
        Err(ureq::Error::StatusCode(code)) => Err(FetchError::Fatal(Error::msg(format!("the server answered HTTP {code}")))),
        Err(e) => Err(FetchError::Transient(Error::network(url, e.to_string()))),
    }
}

/// Fetches a small, unpinned file (an InRelease) into memory.
pub fn get_bytes(url: &str) -> Result<Vec<u8>, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = open_url(url).and_then(|mut r| {
            let mut out = Vec::new();
            r.read_to_end(&mut out)
                .map_err(|e| FetchError::Transient(Error::at("connection failed", e)))?;
            Ok(out)
        });
        match result {
            Ok(bytes) => return Ok(bytes),
            Err(FetchError::Transient(_)) if attempt < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)))
            }
            Err(FetchError::Transient(e) | FetchError::Fatal(e)) => {
                return Err(e.context(format!("fetching {url}")));
            }
        }
    }
}
