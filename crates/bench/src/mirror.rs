//! An image from the mirror with empty caches: Cairn's `lock` and `build-image` for one
//! image and arch, against `mmdebstrap --variant=extract` of the same packages from the
//! same mirror (download, check, unpack: what both do before their outputs differ).

use cairn_steps::{Context, Error};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct MirrorReport {
    pub image: String,
    pub arch: String,
    pub packages: usize,
    pub cairn_lock_s: f64,
    pub cairn_build_s: f64,
    pub mmdebstrap_s: f64,
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::at(what.display(), e)
}

fn run(cmd: &mut Command, what: &str) -> Result<f64, Error> {
    let start = Instant::now();
    let out = cmd.output().map_err(|e| Error::at(what, e))?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `exe` is Cairn's own command (the running one). Both sides start from nothing: a
/// scratch project holding only `image` for `arch`, an empty download cache and store, and
/// mmdebstrap's own empty apt directory.
pub fn run_against_mmdebstrap(
    ctx: &Context,
    exe: &Path,
    image: &str,
    arch: cairn_project::Arch,
) -> Result<MirrorReport, Error> {
    if !std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("mmdebstrap").is_file()))
    {
        return Err(Error::msg(
            "the benchmark compares against `mmdebstrap`: install it with `apt-get install mmdebstrap`",
        ));
    }
    let project = cairn_project::Project::load(&ctx.root)?;
    if project.image(image).is_none() {
        return Err(Error::msg(format!("no image named {image:?}")));
    }
    let scratch = tempfile::Builder::new()
        .prefix("cairn-bench-mirror-")
        .tempdir()
        .map_err(|e| Error::other(e))?;
    let root = scratch.path().join("project");
    for dir in ["nodes", "images/files"] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let copy = |rel: &str| -> Result<(), Error> {
        let (from, to) = (ctx.root.join(rel), root.join(rel));
        std::fs::copy(&from, &to).map_err(io(&from)).map(|_| ())
    };
    copy("nodes/cluster.toml")?;
    if let Ok(entries) = std::fs::read_dir(ctx.root.join("images/files")) {
        for e in entries.flatten() {
            copy(&format!("images/files/{}", e.file_name().to_string_lossy()))?;
        }
    }
    // The image's spec, built for one arch.
    let spec_path = ctx.root.join(format!("images/{image}.toml"));
    let text = std::fs::read_to_string(&spec_path).map_err(io(&spec_path))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| Error::at(spec_path.display(), e))?;
    table.insert(
        "arches".into(),
        toml::Value::Array(vec![toml::Value::String(arch.as_str().into())]),
    );
    let spec_out = root.join(format!("images/{image}.toml"));
    std::fs::write(
        &spec_out,
        toml::to_string(&table).expect("a table serialises"),
    )
    .map_err(io(&spec_out))?;

    let cairn = |args: &[&str]| {
        let mut c = Command::new(exe);
        c.arg("--root")
            .arg(&root)
            .arg("--store")
            .arg(scratch.path().join("store"))
            .arg("--download-cache")
            .arg(scratch.path().join("cache"))
            .arg("--quiet")
            .args(args);
        c
    };
    let cairn_lock_s = run(&mut cairn(&["lock"]), "cairn lock")?;
    let cairn_build_s = run(&mut cairn(&["build-image", image]), "cairn build-image")?;

    // The packages Cairn locked, for mmdebstrap to fetch and unpack.
    let lock = cairn_inputs::lockfile::Lockfile::read(&root.join("inputs.lock"))?
        .ok_or_else(|| Error::msg("the scratch project's lock was not written"))?;
    let scratch_project = cairn_project::Project::load(&root)?;
    let spec = scratch_project
        .image(image)
        .expect("the scratch project holds the image");
    let locked = lock.image_for(spec)?;
    let packages: Vec<String> = lock
        .packages(locked, arch)?
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let mirror = cairn_inputs::mirror::resolve(spec.mirror.as_deref())?;
    let target = scratch.path().join("mmdebstrap");
    let debian_arch = arch.debian();
    let mmdebstrap_s = run(
        Command::new("mmdebstrap")
            .arg("--quiet")
            .arg("--variant=extract")
            .arg(format!("--architectures={debian_arch}"))
            .arg(format!("--include={}", packages.join(",")))
            .arg(&spec.suite)
            .arg(&target)
            .arg(format!("deb {mirror} {} main", spec.suite)),
        "mmdebstrap",
    )?;
    Ok(MirrorReport {
        image: image.into(),
        arch: arch.as_str().into(),
        packages: packages.len(),
        cairn_lock_s,
        cairn_build_s,
        mmdebstrap_s,
    })
}
