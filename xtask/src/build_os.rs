use crate::Env;
use cairn_build::Error;
use cairn_build::lockfile::Lockfile;
use cairn_spec::Arch;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The OS image: images/NAME.toml with kind = "os"
    pub name: String,
    /// Build only this arch (x86_64, armv7, aarch64); repeat for several
    #[arg(long = "arch", value_parser = |s: &str| s.parse::<Arch>())]
    pub arches: Vec<Arch>,
    /// Print each arch's squashfs digest and size as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = Lockfile::read(&env.ctx.lock_path())?
        .ok_or_else(|| Error::msg(format!("{} does not exist: run `cargo xtask lock`", env.ctx.lock_path().display())))?;
    let spec = project.image(&args.name).ok_or_else(|| Error::msg(format!("no image named {:?} in images/", args.name)))?;
    let arches = if args.arches.is_empty() { spec.arches.clone() } else { args.arches.clone() };
    let mut out = serde_json::Map::new();
    for arch in arches {
        let r = cairn_build::os::build_os(&env.ctx, &project, &lock, &args.name, arch).map_err(|e| e.context(format!("building {} for {arch}", args.name)))?;
        let path = env.ctx.store.join("blobs/sha256").join(r.squashfs.hex());
        if !args.json {
            eprintln!("{:>10} {:<8} {} {:>6.1} MiB ({})", r.image, arch.as_str(), r.squashfs, r.size as f64 / 1048576.0, if r.cached { "cached" } else { "built" });
        }
        out.insert(arch.as_str().into(), serde_json::json!({"squashfs": {"digest": r.squashfs.to_string(), "size": r.size, "path": path.display().to_string()}, "cached": r.cached}));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"image": args.name, "arches": out})).expect("json"));
    }
    Ok(ExitCode::SUCCESS)
}
