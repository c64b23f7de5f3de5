//! `cargo xtask bench-flash`: `flash --file` (only the bmap's blocks, fsync, then a full
//! read-back past the page cache) against `dd bs=4M conv=fsync` (every block, no
//! verification) onto the same target file, in the same run. Not a test.

use cairn_deliver::flash::{FlashConfig, NodeImage, Target, flash};
use cairn_inputs::lockfile::Lockfile;
use cairn_node::build::build_node;
use cairn_project::Project;
use cairn_steps::{Context, Error};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct FlashBench {
    pub node: String,
    pub image_bytes: u64,
    pub mapped_bytes: u64,
    /// `dd if=IMAGE of=TARGET bs=4M conv=fsync`, best of the runs.
    pub dd_s: f64,
    /// `flash --file TARGET --secrets ...` with read-back verification, best of the runs.
    pub cairn_s: f64,
    /// cairn / dd: below 1 is faster than dd.
    pub ratio: f64,
    pub runs: u32,
}

pub fn run(ctx: &Context, node_name: &str, runs: u32) -> Result<FlashBench, Error> {
    let project = Project::load(&ctx.root)?;
    let lock = Lockfile::read(&ctx.lock_path())?
        .ok_or_else(|| Error::msg("inputs.lock does not exist: run `cargo xtask lock`"))?;
    build_node(ctx, &project, &lock, node_name)?;
    let store = cairn_store::Store::open(&ctx.store, || {})?;
    let image = NodeImage::from_store(&store, node_name)?;
    let source = store.blob_path(&image.disk);
    // The target lives beside the store, on the same filesystem as a real user's would.
    let scratch = tempfile::Builder::new()
        .prefix("bench-flash-")
        .tempdir_in(store.root().join("tmp"))
        .map_err(|e| Error::other(e))?;
    let target = scratch.path().join("card.img");
    let secrets = b"join_token=bench00.0000000000000000\n".to_vec();
    let (mut dd_best, mut cairn_best) = (f64::MAX, f64::MAX);
    let mut mapped = 0;
    for _ in 0..runs.max(1) {
        let _ = std::fs::remove_file(&target);
        let start = Instant::now();
        let status = Command::new("dd")
            .arg(format!("if={}", source.display()))
            .arg(format!("of={}", target.display()))
            .args(["bs=4M", "conv=fsync", "status=none"])
            .status()
            .map_err(|e| Error::at("dd", e))?;
        if !status.success() {
            return Err(Error::msg("dd failed"));
        }
        dd_best = dd_best.min(start.elapsed().as_secs_f64());

        let _ = std::fs::remove_file(&target);
        let start = Instant::now();
        let report = flash(
            &store,
            &image,
            &FlashConfig {
                target: Target::File(target.clone()),
                secrets: Some(secrets.clone()),
                force: false,
                progress: false,
            },
        )?;
        cairn_best = cairn_best.min(start.elapsed().as_secs_f64());
        mapped = report.bytes_written;
    }
    Ok(FlashBench {
        node: node_name.into(),
        image_bytes: image.size,
        mapped_bytes: mapped,
        dd_s: (dd_best * 1000.0).round() / 1000.0,
        cairn_s: (cairn_best * 1000.0).round() / 1000.0,
        ratio: (cairn_best / dd_best * 100.0).round() / 100.0,
        runs: runs.max(1),
    })
}
