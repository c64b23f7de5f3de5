//! `cargo xtask bench`: speed and memory of a container image build, each figure next to a
//! peer tool measured in the same run. Not a test: nothing here asserts a time.

use cairn_formats::{Digest, HashingWriter, gzip};
use cairn_inputs::lockfile::Lockfile;
use cairn_os::container::build_image;
use cairn_steps::{Context, Error};
use sha2::Digest as _;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub image: String,
    pub cold_build_s: f64,
    pub warm_build_ms: f64,
    /// The same, as a user runs it: a fresh process of this binary (spec and lock parsed).
    pub warm_command_ms: f64,
    pub layer_tar_bytes: u64,
    pub gzip_cairn_mb_s: f64,
    pub gzip_pigz_p2_mb_s: f64,
    pub gzip_cairn_bytes: u64,
    pub gzip_pigz_bytes: u64,
    pub sha256_cairn_mb_s: f64,
    pub sha256_sha2_crate_mb_s: f64,
    pub sha256sum_mb_s: f64,
    pub peak_rss_mib: f64,
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

pub(crate) fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn tool(name: &str, package: &str) -> Result<(), Error> {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    if found {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "the benchmark compares against `{name}`: install it with `apt-get install {package}`"
        )))
    }
}

/// Times `cmd` reading `input` on stdin; returns (duration, bytes written to stdout).
fn time_stdin(cmd: &mut Command, input: &[u8]) -> Result<(Duration, u64), Error> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::at(format!("{cmd:?}"), e))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k) = stdout.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    stdin.write_all(input).map_err(|e| Error::other(e))?;
    drop(stdin);
    let n = reader.join().expect("reader thread");
    child.wait().map_err(|e| Error::other(e))?;
    Ok((start.elapsed(), n))
}

pub fn run(ctx: &Context, image: &str) -> Result<Report, Error> {
    tool("pigz", "pigz")?;
    tool("sha256sum", "coreutils")?;
    let project = cairn_project::Project::load(&ctx.root)?;
    let lock = Lockfile::read(&ctx.lock_path())?
        .ok_or_else(|| Error::msg("no inputs.lock: run `cargo xtask lock`"))?;

    // Downloads cached first, so the cold build measures building.
    let scratch = tempfile::tempdir().map_err(|e| Error::other(e))?;
    let warmup = Context {
        store: scratch.path().join("warmup"),
        ..ctx.clone()
    };
    build_image(&warmup, &project, &lock, image, &[])?;

    let bench_ctx = Context {
        store: scratch.path().join("store"),
        progress: false,
        ..ctx.clone()
    };
    let start = Instant::now();
    let result = build_image(&bench_ctx, &project, &lock, image, &[])?;
    let cold = start.elapsed();
    let peak = peak_rss_mib();
    let mut warm = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        build_image(&bench_ctx, &project, &lock, image, &[])?;
        warm = warm.min(start.elapsed());
    }

    let exe = std::env::current_exe().map_err(|e| Error::other(e))?;
    let mut warm_command = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let st = Command::new(&exe)
            .arg("--root")
            .arg(&ctx.root)
            .arg("--store")
            .arg(&bench_ctx.store)
            .arg("--cache")
            .arg(&ctx.cache)
            .args(["--quiet", "build-image", image])
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Error::at(exe.display(), e))?;
        if !st.success() {
            return Err(Error::msg("the warm build command failed"));
        }
        warm_command = warm_command.min(start.elapsed());
    }

    // Compression and hashing on the biggest layer's tar.
    let biggest = result
        .arches
        .iter()
        .max_by_key(|a| a.layer_size)
        .expect("at least one arch");
    let layer = std::fs::read(
        bench_ctx
            .store
            .join("blobs/sha256")
            .join(biggest.layer.hex()),
    )
    .map_err(|e| Error::other(e))?;
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&layer[..])
        .read_to_end(&mut tar)
        .map_err(|e| Error::other(e))?;
    let start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut w = gzip::members_writer(Vec::new(), threads);
    w.write_all(&tar).map_err(|e| Error::other(e))?;
    let ours = w.finish().map_err(|e| Error::other(e))?;
    let ours_time = start.elapsed();
    if ours != layer {
        return Err(Error::msg(
            "recompressing the layer gave different bytes: gzip is not deterministic",
        ));
    }
    let (pigz_time, pigz_bytes) = time_stdin(
        Command::new("pigz").args(["-p", "2", "-6", "-n", "-c"]),
        &tar,
    )?;

    let start = Instant::now();
    let mut w = HashingWriter::new(std::io::sink());
    for chunk in tar.chunks(1 << 16) {
        w.write_all(chunk).map_err(|e| Error::other(e))?;
    }
    let (_, d1, _) = w.finish();
    let ours_hash = start.elapsed();
    let start = Instant::now();
    let d2 = Digest::from_bytes(sha2::Sha256::digest(&tar).into());
    let crate_hash = start.elapsed();
    assert_eq!(d1, d2);
    let (sum_time, _) = time_stdin(&mut Command::new("sha256sum"), &tar)?;

    let n = tar.len() as u64;
    Ok(Report {
        image: image.to_string(),
        cold_build_s: cold.as_secs_f64(),
        warm_build_ms: warm.as_secs_f64() * 1000.0,
        warm_command_ms: warm_command.as_secs_f64() * 1000.0,
        layer_tar_bytes: n,
        gzip_cairn_mb_s: mb_s(n, ours_time),
        gzip_pigz_p2_mb_s: mb_s(n, pigz_time),
        gzip_cairn_bytes: ours.len() as u64,
        gzip_pigz_bytes: pigz_bytes,
        sha256_cairn_mb_s: mb_s(n, ours_hash),
        sha256_sha2_crate_mb_s: mb_s(n, crate_hash),
        sha256sum_mb_s: mb_s(n, sum_time),
        peak_rss_mib: peak,
    })
}
