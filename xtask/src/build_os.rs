use crate::Env;
use cairn_inputs::lockfile::Lockfile;
use cairn_project::Arch;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The OS image: images/NAME.toml with kind = "os"
    pub name: String,
    /// Build only this arch (x86_64, armv7, aarch64); repeat for several
    #[arg(long = "arch", value_parser = |s: &str| s.parse::<Arch>())]
    pub arches: Vec<Arch>,
    /// Print each arch's squashfs, kernel and initramfs (digest, size, path) as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = Lockfile::read(&env.ctx.lock_path())?.ok_or_else(|| {
        Error::msg(format!(
            "{} does not exist: run `cargo xtask lock`",
            env.ctx.lock_path().display()
        ))
    })?;
    let spec = project
        .image(&args.name)
        .ok_or_else(|| Error::msg(format!("no image named {:?} in images/", args.name)))?;
    let arches = if args.arches.is_empty() {
        spec.arches.clone()
    } else {
        args.arches.clone()
    };
    let mut out = serde_json::Map::new();
    for arch in arches {
        let r = cairn_os::base::build_os(&env.ctx, &project, &lock, &args.name, arch)
            .map_err(|e| e.context(format!("building {} for {arch}", args.name)))?;
        if !args.json {
            let how = if r.cached { "cached" } else { "built" };
            for (what, b) in [
                ("squashfs", &r.squashfs),
                ("kernel", &r.kernel),
                ("initramfs", &r.initramfs),
            ] {
                eprintln!(
                    "{:>10} {:<8} {what:<10} {} {:>6.1} MiB ({how})",
                    r.image,
                    arch.as_str(),
                    b.digest,
                    b.size as f64 / 1048576.0
                );
            }
        }
        out.insert(arch.as_str().into(), r.to_json(&env.ctx.store));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"image": args.name, "arches": out}))
                .expect("json")
        );
    }
    Ok(ExitCode::SUCCESS)
}
