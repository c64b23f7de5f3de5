use crate::Env;
use cairn_inputs::lockfile::Lockfile;
use cairn_project::Arch;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The image: images/NAME.toml
    pub name: String,
    /// Build only this arch (x86_64, armv7, aarch64); repeat for several. The index is then
    /// tagged NAME-ARCH[-ARCH] instead of NAME
    #[arg(long = "arch", value_parser = parse_arch)]
    pub arches: Vec<Arch>,
    /// Print the index digest, per-arch manifest digests and the layout path as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    s.parse()
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = Lockfile::read(&env.ctx.lock_path())?.ok_or_else(|| {
        Error::msg(format!(
            "{} does not exist: run `cargo xtask lock`",
            env.ctx.lock_path().display()
        ))
    })?;
    let result =
        cairn_os::container::build_image(&env.ctx, &project, &lock, &args.name, &args.arches)
            .map_err(|e| e.context(format!("building {}", args.name)))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result.to_json()).expect("json")
        );
    } else {
        for a in &result.arches {
            let how = if a.cached { "cached" } else { "built" };
            eprintln!(
                "{:>10} {:<14} {} ({how})",
                result.name, a.platform, a.manifest
            );
        }
        eprintln!(
            "{:>10} {:<14} {}  oci:{}:{}",
            result.name,
            "index",
            result.index,
            result.layout.display(),
            result.tag
        );
    }
    Ok(ExitCode::SUCCESS)
}
