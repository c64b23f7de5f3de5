use crate::Env;
use cairn_build::Error;
use cairn_store::Store;
use std::collections::BTreeSet;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Re-hash every blob and check that every tag's blobs are present
    Verify {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete what neither index.json's current tags nor the current specs reach
    Gc {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

fn open(env: &Env) -> Result<Store, Error> {
    Ok(Store::open(&env.ctx.store, || eprintln!("waiting for another cairn process to release {}", env.ctx.store.join(".lock").display()))?)
}

pub fn run(env: &Env, cmd: Command) -> Result<ExitCode, Error> {
    match cmd {
        Command::Verify { json } => {
            let store = open(env)?;
            let bar = cairn_build::progress::spinner(env.ctx.progress && !json, "verifying blobs");
            let report = store.verify(|_| bar.tick())?;
            bar.finish_and_clear();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "blobs": report.n_blobs,
                        "bytes": report.n_bytes,
                        "corrupt": report.corrupt.iter().map(|(n, d)| serde_json::json!({"blob": n, "actual": d.map(|d| d.to_string())})).collect::<Vec<_>>(),
                        "missing": report.missing.iter().map(|(t, d)| serde_json::json!({"tag": t, "digest": d.to_string()})).collect::<Vec<_>>(),
                        "ok": report.is_ok(),
                    })
                );
            } else {
                for (name, actual) in &report.corrupt {
                    let actual = actual.map(|d| d.to_string()).unwrap_or_else(|| "unreadable".into());
                    eprintln!("corrupt: blobs/sha256/{name} hashes to {actual}");
                }
                for (tag, d) in &report.missing {
                    eprintln!("missing: {d} (needed by tag {tag})");
                }
                eprintln!("{} blobs, {} bytes checked: {}", report.n_blobs, report.n_bytes, if report.is_ok() { "ok" } else { "problems found; rebuild the affected images, then run `cargo xtask store gc`" });
            }
            Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Gc { json } => {
            let project = crate::load_project(env)?;
            let keep: BTreeSet<String> = project.images.iter().map(|i| i.name.clone()).chain(project.nodes.iter().map(|n| n.name.clone())).collect();
            let store = open(env)?;
            let report = store.gc(&keep)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "removed_tags": report.removed_tags,
                        "removed_blobs": report.removed_blobs,
                        "removed_bytes": report.removed_bytes,
                        "removed_actions": report.removed_actions,
                        "kept_blobs": report.kept_blobs,
                    })
                );
            } else {
                for t in &report.removed_tags {
                    eprintln!("untagged {t} (no spec of that name)");
                }
                eprintln!(
                    "removed {} blobs ({} bytes) and {} action records; kept {} blobs",
                    report.removed_blobs, report.removed_bytes, report.removed_actions, report.kept_blobs
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
