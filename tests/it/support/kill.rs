//! Killing commands at random moments: a seeded generator of moments, a timed run, a
//! run killed with SIGKILL, and the temp files a kill may leave.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A small generator of kill moments, seeded from the clock and printed, so a failing
/// round can be replayed with `CAIRN_FAULT_SEED`.
pub struct Moments(u64);

#[allow(clippy::new_without_default)]
impl Moments {
    pub fn new() -> Moments {
        let seed = std::env::var("CAIRN_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill moments seeded with CAIRN_FAULT_SEED={seed}");
        Moments(seed | 1)
    }

    /// A fraction in [0.05, 0.95).
    pub fn next(&mut self) -> f64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        0.05 + 0.9 * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// The names in `dir` that start with `prefix` (none when `dir` does not exist).
pub fn files_in(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `cmd` to success with `stdin`, and says how long it took.
pub fn timed(cmd: &mut Command, stdin: &str) -> Duration {
    let start = Instant::now();
    let out = super::output_with_stdin(cmd, stdin);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

/// Starts `cmd`, kills it with SIGKILL after `after`; says whether it was still running.
pub fn kill_after(cmd: &mut Command, stdin: &str, after: Duration) -> bool {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}
