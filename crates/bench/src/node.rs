//! `cargo xtask bench-node`: speed and memory of node builds, and Cairn's squashfs next to
//! `mksquashfs` on the same tree with the same compressor, in the same run. Not a test.

use cairn_inputs::lockfile::Lockfile;
use cairn_node::build::build_node;
use cairn_project::Project;
use cairn_steps::{Context, Error};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeReport {
    pub node: String,
    /// `build-node NODE` into an empty store (downloads cached).
    pub cold_build_s: f64,
    /// `build-node --all` with every node already built, in process.
    pub warm_all_ms: f64,
    /// `build-node NODE` after one SSH key of the cluster changed.
    pub one_key_changed_s: f64,
    pub one_key_changed_percent_of_cold: f64,
    pub squashfs_cairn_s: f64,
    pub squashfs_mksquashfs_s: f64,
    pub squashfs_cairn_bytes: u64,
    pub squashfs_mksquashfs_bytes: u64,
    pub squashfs_files: usize,
    pub peak_rss_mib: f64,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub fn run(ctx: &Context, node_name: &str) -> Result<NodeReport, Error> {
    for (tool, package) in [
        ("mksquashfs", "squashfs-tools"),
        ("unsquashfs", "squashfs-tools"),
    ] {
        if !std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        {
            return Err(Error::msg(format!(
                "the benchmark compares against `{tool}`: install it with `apt-get install {package}`"
            )));
        }
    }
    let mut project = Project::load(&ctx.root)?;
    let lock = Lockfile::read(&ctx.lock_path())?
        .ok_or_else(|| Error::msg("inputs.lock does not exist: run `cargo xtask lock`"))?;
    let node = project
        .node(node_name)
        .ok_or_else(|| Error::msg(format!("no node named {node_name:?}")))?
        .clone();
    let scratch = tempfile::Builder::new()
        .prefix("cairn-bench-node-")
        .tempdir()
        .map_err(|e| Error::other(e))?;
    let bench_ctx = Context {
        store: scratch.path().join("store"),
        progress: false,
        ..ctx.clone()
    };

    let start = Instant::now();
    build_node(&bench_ctx, &project, &lock, node_name)?;
    let cold_build = start.elapsed();
    for n in project.nodes.clone() {
        build_node(&bench_ctx, &project, &lock, &n.name)?;
    }
    let start = Instant::now();
    for n in project.nodes.clone() {
        let r = build_node(&bench_ctx, &project, &lock, &n.name)?;
        if !r.cached {
            return Err(Error::msg(format!("node {} was not cached", n.name)));
        }
    }
    let warm_all = start.elapsed();

    project
        .cluster
        .ssh
        .authorized_keys
        .push("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJlbmNobWFyay1yb3RhdGVkLWtleS0wMDAwMDAwMDAw bench@cairn".into());
    let start = Instant::now();
    let changed = build_node(&bench_ctx, &project, &lock, node_name)?;
    let one_changed = start.elapsed();
    if changed.cached || !changed.base_cached {
        return Err(Error::msg(
            "the changed node should rebuild its own piece on a cached base",
        ));
    }

    // The same tree through mksquashfs: unpacked from Cairn's squashfs, which also times
    // Cairn writing it again from the assembled root filesystem.
    let spec = project
        .image(node.image.get_ref())
        .expect("checked when loading")
        .clone();
    let locked = lock.image_for(&spec)?;
    let epoch = locked.epoch(&spec);
    let store = cairn_store::Store::open(&bench_ctx.store, || {})?;
    let cache = cairn_inputs::fetch::Cache::new(&ctx.cache);
    let packages = lock.packages(locked, node.arch)?;
    let mut fs = cairn_os::base::assemble(
        &store,
        &cache,
        &spec,
        &packages,
        node.arch,
        epoch,
        &cairn_os::base::OsExtras::default(),
    )?;
    let squashfs_files = fs.nodes().len();
    let out = scratch.path().join("cairn.squashfs");
    let start = Instant::now();
    let file = std::fs::File::create(&out).map_err(|e| Error::other(e))?;
    let (_, cairn_bytes) = fs.write_squashfs(std::io::BufWriter::new(file), epoch as u32)?;
    let cairn_time = start.elapsed();
    drop(fs);
    let tree = scratch.path().join("tree");
    let status = Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&tree)
        .arg(&out)
        .status()
        .map_err(|e| Error::at("unsquashfs", e))?;
    if !status.success() {
        return Err(Error::msg("unsquashfs failed"));
    }
    let theirs = scratch.path().join("mksquashfs.squashfs");
    let start = Instant::now();
    let status = Command::new("mksquashfs")
        .arg(&tree)
        .arg(&theirs)
        .args([
            "-comp",
            "zstd",
            "-Xcompression-level",
            "3",
            "-b",
            "131072",
            "-all-root",
            "-all-time",
            "0",
            "-mkfs-time",
            "0",
            "-no-xattrs",
            "-noappend",
            "-quiet",
            "-no-progress",
            "-processors",
            "2",
        ])
        .status()
        .map_err(|e| Error::at("mksquashfs", e))?;
    let theirs_time = start.elapsed();
    if !status.success() {
        return Err(Error::msg("mksquashfs failed"));
    }
    let theirs_bytes = std::fs::metadata(&theirs)
        .map_err(|e| Error::other(e))?
        .len();

    Ok(NodeReport {
        node: node_name.into(),
        cold_build_s: secs(cold_build),
        warm_all_ms: (warm_all.as_secs_f64() * 1e5).round() / 100.0,
        one_key_changed_s: secs(one_changed),
        one_key_changed_percent_of_cold: (one_changed.as_secs_f64() / cold_build.as_secs_f64()
            * 1000.0)
            .round()
            / 10.0,
        squashfs_cairn_s: secs(cairn_time),
        squashfs_mksquashfs_s: secs(theirs_time),
        squashfs_cairn_bytes: cairn_bytes,
        squashfs_mksquashfs_bytes: theirs_bytes,
        squashfs_files,
        peak_rss_mib: crate::image::peak_rss_mib(),
    })
}

/// `build-node --all` into an empty store (downloads cached), in process; seconds.
pub fn cold_all(ctx: &Context) -> Result<f64, Error> {
    let project = Project::load(&ctx.root)?;
    let lock = Lockfile::read(&ctx.lock_path())?
        .ok_or_else(|| Error::msg("inputs.lock does not exist: run `cargo xtask lock`"))?;
    let scratch = tempfile::Builder::new()
        .prefix("cairn-bench-nodes-")
        .tempdir()
        .map_err(|e| Error::other(e))?;
    let bench_ctx = Context {
        store: scratch.path().join("store"),
        progress: false,
        ..ctx.clone()
    };
    let start = Instant::now();
    for n in &project.nodes {
        build_node(&bench_ctx, &project, &lock, &n.name)?;
    }
    Ok(secs(start.elapsed()))
}
