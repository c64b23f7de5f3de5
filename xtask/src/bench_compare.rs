//! `cargo xtask bench-compare`: every figure the speed goals name, measured in one run next
//! to the peer tool it is compared with, as a table of ratios. Benchmarks report; tests
//! never time.

use crate::Env;
use cairn_steps::Error;
use std::process::{Command, ExitCode};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The SD node built cold, warm and with one SSH key changed
    #[arg(long, default_value = "pi-worker")]
    pub node: String,
    /// The container image built from the mirror against mmdebstrap, and gzipped against pigz
    #[arg(long, default_value = "haproxy")]
    pub image: String,
    /// Also time a first compile of the command (`cargo build --release` into an empty
    /// target directory, crates already downloaded): several minutes
    #[arg(long)]
    pub compile: bool,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

struct Row {
    what: String,
    figure: String,
    goal: &'static str,
    met: Option<bool>,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::at("this command", e))?;
    eprintln!(
        "bench-compare: {} from the mirror against mmdebstrap (empty caches)",
        args.image
    );
    let mirror = cairn_bench::mirror::run_against_mmdebstrap(
        &env.ctx,
        &exe,
        &args.image,
        cairn_project::Arch::X86_64,
    )?;
    eprintln!(
        "bench-compare: node {} (cold, one key changed, squashfs against mksquashfs)",
        args.node
    );
    let node = cairn_bench::node::run(&env.ctx, &args.node)?;
    eprintln!("bench-compare: every node cold");
    let all = cairn_bench::node::cold_all(&env.ctx)?;
    eprintln!(
        "bench-compare: {} layers (gzip against pigz -p2)",
        args.image
    );
    let image = cairn_bench::image::run(&env.ctx, &args.image)?;
    let compile = if args.compile {
        eprintln!("bench-compare: a first compile of xtask (cargo build --release)");
        Some(first_compile(env)?)
    } else {
        None
    };

    let cairn_mirror = mirror.cairn_lock_s + mirror.cairn_build_s;
    let mirror_ratio = mirror.mmdebstrap_s / cairn_mirror;
    let squash_time = node.squashfs_cairn_s / node.squashfs_mksquashfs_s;
    let squash_size =
        (node.squashfs_cairn_bytes as f64 / node.squashfs_mksquashfs_bytes as f64 - 1.0) * 100.0;
    let gzip_ratio = image.gzip_cairn_mb_s / image.gzip_pigz_p2_mb_s;
    let mut rows = vec![
        Row {
            what: format!("build-node {} cold", node.node),
            figure: format!("{:.2} s", node.cold_build_s),
            goal: "<= 8 s",
            met: Some(node.cold_build_s <= 8.0),
        },
        Row {
            what: "squashfs zstd-3 vs mksquashfs -processors 2".into(),
            figure: format!("{squash_time:.2}x the time, size {squash_size:+.2}%"),
            goal: "<= 0.8x, size <= +0.5%",
            met: Some(squash_time <= 0.8 && squash_size <= 0.5),
        },
        Row {
            what: "layer gzip -6 vs pigz -p2".into(),
            figure: format!(
                "{gzip_ratio:.2}x the throughput ({:.0} vs {:.0} MB/s)",
                image.gzip_cairn_mb_s, image.gzip_pigz_p2_mb_s
            ),
            goal: ">= 1.5x",
            met: Some(gzip_ratio >= 1.5),
        },
        Row {
            what: format!(
                "{} x86_64 from the mirror: lock + build-image vs mmdebstrap --variant=extract ({} packages)",
                mirror.image, mirror.packages
            ),
            figure: format!(
                "{mirror_ratio:.2}x faster ({:.2} + {:.2} s vs {:.2} s)",
                mirror.cairn_lock_s, mirror.cairn_build_s, mirror.mmdebstrap_s
            ),
            goal: ">= 3x",
            met: Some(mirror_ratio >= 3.0),
        },
        Row {
            what: "build-node --all cold".into(),
            figure: format!("{all:.2} s"),
            goal: "<= 20 s",
            met: Some(all <= 20.0),
        },
        Row {
            what: "one node's SSH key changed".into(),
            figure: format!(
                "{:.1}% of cold ({:.2} s)",
                node.one_key_changed_percent_of_cold, node.one_key_changed_s
            ),
            goal: "<= 2%",
            met: Some(node.one_key_changed_percent_of_cold <= 2.0),
        },
    ];
    rows.push(match compile {
        Some(s) => Row {
            what: "first compile of xtask (release, crates downloaded)".into(),
            figure: format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0),
            goal: "<= 4 min",
            met: Some(s <= 240.0),
        },
        None => Row {
            what: "first compile of xtask".into(),
            figure: "not measured (--compile)".into(),
            goal: "<= 4 min",
            met: None,
        },
    });
    if args.json {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::json!({"what": r.what, "figure": r.figure, "goal": r.goal, "met": r.met}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rows": json,
                "mirror": mirror,
                "node": node,
                "all_nodes_cold_s": all,
                "image": image,
                "first_compile_s": compile,
            }))
            .expect("json")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    for r in &rows {
        let mark = match r.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "",
        };
        println!(
            "{:<width$}  {:<48}  goal {:<24} {mark}",
            r.what, r.figure, r.goal
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds of `cargo build --release --locked -p xtask` into an empty target directory.
fn first_compile(env: &Env) -> Result<f64, Error> {
    let target = tempfile::Builder::new()
        .prefix("cairn-bench-compile-")
        .tempdir()
        .map_err(|e| Error::other(e))?;
    let start = Instant::now();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--locked", "--quiet", "-p", "xtask"])
        .arg("--target-dir")
        .arg(target.path())
        .current_dir(&env.ctx.root)
        .status()
        .map_err(|e| Error::at("cargo build", e))?;
    if !status.success() {
        return Err(Error::msg("cargo build --release failed"));
    }
    Ok(start.elapsed().as_secs_f64())
}
