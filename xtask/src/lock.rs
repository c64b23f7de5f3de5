use crate::Env;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Print what was locked as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    // (A lock that does not read is replaced: everything in the new one is a change.)
    let before = cairn_inputs::lockfile::Lockfile::read(&env.ctx.lock_path())
        .ok()
        .flatten()
        .unwrap_or_default();
    let summary = cairn_inputs::lock::lock(&env.ctx, &project)?;
    let after = crate::read_lock(env)?;
    let changes = cairn_inputs::lockfile::changes(&before, &after);
    if args.json {
        let entries: Vec<_> = summary
            .entries
            .iter()
            .map(|(image, arch, n, bytes)| serde_json::json!({"image": image, "arch": arch.as_str(), "packages": n, "bytes": bytes}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"lock": env.ctx.lock_path().display().to_string(), "changed": summary.changed, "changes": changes, "images": entries, "kubernetes_pinned": summary.kubernetes})
        );
    } else {
        for (image, arch, n, bytes) in &summary.entries {
            eprintln!(
                "{image:>16} {:<8} {n:>4} packages {:>8.1} MiB",
                arch.as_str(),
                *bytes as f64 / 1048576.0
            );
        }
        for name in &summary.kubernetes {
            eprintln!("{name:>32} pinned from upstream's checksum file");
        }
        for c in &changes {
            eprintln!("  {c}");
        }
        let what = if summary.changed {
            "updated"
        } else {
            "unchanged"
        };
        eprintln!("{} {what}", env.ctx.lock_path().display());
    }
    Ok(ExitCode::SUCCESS)
}
