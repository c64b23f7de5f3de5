use crate::Env;
use cairn_steps::Error;
use std::collections::BTreeSet;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Re-hash every blob and check that every tag's blobs are present
    Verify {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// Delete corrupt blobs and the cache records that name them, so a rebuild replaces them
        #[arg(long)]
        repair: bool,
    },
    /// Untag what no current spec names, then delete every blob and cache record no tag reaches
    Gc {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn run(env: &Env, cmd: Command) -> Result<ExitCode, Error> {
    match cmd {
        Command::Verify { json, repair } => {
            let store = env.ctx.open_store()?;
            let bar = cairn_steps::progress::spinner(env.ctx.progress && !json, "verifying blobs");
            let report = store.verify(|_| bar.tick())?;
            bar.finish_and_clear();
            let repaired = if repair { store.repair(&report)? } else { 0 };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "blobs": report.n_blobs,
                        "bytes": report.n_bytes,
                        "corrupt": report.corrupt.iter().map(|(n, d)| serde_json::json!({"blob": n, "actual": d.map(|d| d.to_string())})).collect::<Vec<_>>(),
                        "missing": report.missing.iter().map(|(t, d)| serde_json::json!({"tag": t, "digest": d.to_string()})).collect::<Vec<_>>(),
                        "ok": report.is_ok(),
                        "repaired": repaired,
                    })
                );
            } else {
                for (name, actual) in &report.corrupt {
                    let actual = actual
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "unreadable".into());
                    eprintln!("corrupt: blobs/sha256/{name} hashes to {actual}");
                }
                for (tag, d) in &report.missing {
                    eprintln!("missing: {d} (needed by tag {tag})");
                }
                let advice = if report.is_ok() {
                    "ok"
                } else if repaired > 0 {
                    "corrupt blobs removed; build the affected images again"
                } else {
                    "problems found; run `cargo xtask store verify --repair`, then build the affected images again"
                };
                eprintln!(
                    "{} blobs, {} bytes checked: {advice}",
                    report.n_blobs, report.n_bytes
                );
            }
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Gc { json } => {
            let project = crate::load_project(env)?;
            let mut keep: BTreeSet<String> = project.nodes.iter().map(|n| n.name.clone()).collect();
            for image in &project.images {
                keep.insert(image.name.clone());
                // Tags of builds for a subset of the arches (`haproxy-aarch64`).
                for subset in 1u32..(1 << image.arches.len()) {
                    let arches: Vec<&str> = image
                        .arches
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| subset & (1 << i) != 0)
                        .map(|(_, a)| a.as_str())
                        .collect();
                    keep.insert(cairn_os::container::subset_tag(&image.name, &arches));
                }
            }
            // SBOMs and signatures stay as long as what they describe.
            let beside: Vec<String> = keep
                .iter()
                .flat_map(|t| {
                    [
                        format!("{t}{}", cairn_deliver::bundle::SBOM_TAG_SUFFIX),
                        cairn_trust::record::tag(t),
                    ]
                })
                .collect();
            keep.extend(beside);
            let store = env.ctx.open_store()?;
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
                    report.removed_blobs,
                    report.removed_bytes,
                    report.removed_actions,
                    report.kept_blobs
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
