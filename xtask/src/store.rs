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
    /// List the store's tags: what each is, its digest, the bytes it reaches, where it came from
    List {
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Untag what no current spec names (keeping what was pulled or imported), then delete
    /// every blob and cache record no tag reaches
    Gc {
        /// Tags to drop even though a spec names them or they were pulled or imported
        #[arg(value_name = "TAG")]
        drop: Vec<String>,
        /// Also drop the pulled and imported tags no spec names (kept by default: they are
        /// the copies for an offline reinstall)
        #[arg(long)]
        pulled: bool,
        /// Print what would be removed, and remove nothing
        #[arg(long)]
        dry_run: bool,
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
            // The tags that reach a corrupt or missing blob: what to build or pull again.
            let bad: BTreeSet<cairn_formats::Digest> = report
                .corrupt
                .iter()
                .filter_map(|(name, _)| cairn_formats::Digest::from_hex(name).ok())
                .chain(report.missing.iter().map(|(_, d)| *d))
                .collect();
            let affected: Vec<String> = if bad.is_empty() {
                Vec::new()
            } else {
                store
                    .tags()?
                    .into_iter()
                    .filter(|t| {
                        let (reached, missing) = store.reachable(&[t.digest]);
                        reached.iter().chain(&missing).any(|d| bad.contains(d))
                            || bad.contains(&t.digest)
                    })
                    .map(|t| t.name)
                    .collect()
            };
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
                        "affected_tags": affected,
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
                let names = if affected.is_empty() {
                    "no tag".to_string()
                } else {
                    affected.join(" ")
                };
                let advice = if report.is_ok() {
                    "ok".to_string()
                } else if repaired > 0 {
                    format!("corrupt blobs removed; build or pull again: {names}")
                } else {
                    format!(
                        "problems found in {names}; run `cargo xtask store verify --repair`, then build (or pull) them again"
                    )
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
        Command::List { json } => list(env, json),
        Command::Gc {
            drop,
            pulled,
            dry_run,
            json,
        } => {
            let project = crate::load_project(env)?;
            let mut keep = spec_tags(&project);
            let store = env.ctx.open_store()?;
            let tags: BTreeSet<String> = store.tags()?.into_iter().map(|t| t.name).collect();
            if let Some(unknown) = drop.iter().find(|t| !tags.contains(*t)) {
                return Err(Error::msg(format!(
                    "the store has no tag {unknown:?}: `cargo xtask store list` shows its tags"
                )));
            }
            // What was pulled or imported stays (the copy kept for an offline reinstall),
            // unless asked.
            let origins = store.origins();
            let mut kept_pulled = Vec::new();
            // (An SBOM or signatures tag goes with what it describes, below.)
            let beside_of = |t: &str| {
                [
                    cairn_deliver::bundle::SBOM_TAG_SUFFIX,
                    cairn_trust::record::TAG_SUFFIX,
                ]
                .iter()
                .any(|suffix| t.strip_suffix(suffix).is_some_and(|s| tags.contains(s)))
            };
            for (tag, origin) in &origins {
                if tags.contains(tag)
                    && !keep.contains(tag)
                    && !pulled
                    && !beside_of(tag)
                    && !drop.contains(tag)
                {
                    keep.insert(tag.clone());
                    kept_pulled.push((tag.clone(), origin.clone()));
                }
            }
            for t in &drop {
                keep.remove(t);
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
            // Named: dropped, an SBOM or signatures tag too.
            for t in &drop {
                keep.remove(t);
            }
            let report = if dry_run {
                store.gc_dry_run(&keep)?
            } else {
                store.gc(&keep)?
            };
            let why = |t: &str| {
                if drop.iter().any(|d| d == t) {
                    "as asked".to_string()
                } else if let Some(o) = origins.get(t) {
                    format!("{o}, and --pulled")
                } else {
                    "no spec of that name".to_string()
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "dry_run": dry_run,
                        "removed_tags": report.removed_tags,
                        "removed": report.removed_tag_bytes.iter().map(|(t, b)| serde_json::json!({"tag": t, "bytes": b, "why": why(t)})).collect::<Vec<_>>(),
                        "kept_pulled": kept_pulled.iter().map(|(t, o)| serde_json::json!({"tag": t, "origin": o})).collect::<Vec<_>>(),
                        "removed_blobs": report.removed_blobs,
                        "removed_bytes": report.removed_bytes,
                        "removed_actions": report.removed_actions,
                        "kept_blobs": report.kept_blobs,
                    })
                );
            } else {
                let verb = if dry_run { "would untag" } else { "untagged" };
                for (t, bytes) in &report.removed_tag_bytes {
                    eprintln!("{verb} {t} ({}): {} only it held", why(t), mib(*bytes));
                }
                for (t, o) in &kept_pulled {
                    eprintln!("kept {t} ({o}; `store gc --pulled` or `store gc {t}` drops it)");
                }
                eprintln!(
                    "{} {} blobs ({}) and {} action records; kept {} blobs",
                    if dry_run { "would remove" } else { "removed" },
                    report.removed_blobs,
                    mib(report.removed_bytes),
                    report.removed_actions,
                    report.kept_blobs
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// The tags the current specs name: each node, each image and its builds for a subset of
/// its arches (`haproxy-aarch64`). `gc` keeps them; `list` calls them built.
fn spec_tags(project: &cairn_project::Project) -> BTreeSet<String> {
    let mut tags: BTreeSet<String> = project.nodes.iter().map(|n| n.name.clone()).collect();
    for image in &project.images {
        tags.insert(image.name.clone());
        for subset in 1u32..(1 << image.arches.len()) {
            let arches: Vec<&str> = image
                .arches
                .iter()
                .enumerate()
                .filter(|(i, _)| subset & (1 << i) != 0)
                .map(|(_, a)| a.as_str())
                .collect();
            tags.insert(cairn_os::container::subset_tag(&image.name, &arches));
        }
    }
    tags
}

/// `store list`.
fn list(env: &Env, json: bool) -> Result<ExitCode, Error> {
    // Which tags a spec names, when this checkout's specs load (a store is listed without).
    let specs = crate::load_project(env)
        .map(|p| spec_tags(&p))
        .unwrap_or_default();
    let store = env.ctx.open_store()?;
    let origins = store.origins();
    let mut rows = Vec::new();
    for t in store.tags()? {
        let doc: serde_json::Value = store
            .read_blob(&t.digest)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let kind = match doc["artifactType"].as_str() {
            Some(cairn_oci::media::NODE_ARTIFACT) => "node",
            Some(cairn_oci::media::SPDX) => "sbom",
            Some(cairn_oci::media::SIGNATURES_ARTIFACT) => "signatures",
            Some(_) => "artifact",
            None if t.media_type == cairn_oci::media::INDEX => "image",
            None => "manifest",
        };
        let (reached, missing) = store.reachable(&[t.digest]);
        let bytes: u64 = reached
            .iter()
            .map(|d| std::fs::metadata(store.blob_path(d)).map_or(0, |m| m.len()))
            .sum();
        let from = match origins.get(&t.name) {
            Some(o) => o.clone(),
            None if specs.contains(&t.name) => "built".to_string(),
            None => "built (no spec of that name now)".to_string(),
        };
        rows.push((t, kind, bytes, missing.len(), from));
    }
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(t, kind, bytes, missing, from)| {
                serde_json::json!({
                    "tag": t.name, "kind": kind, "digest": t.digest.to_string(),
                    "bytes": bytes, "missing_blobs": missing, "from": from,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "tags": list }));
    } else {
        for (t, kind, bytes, missing, from) in &rows {
            let missing = if *missing > 0 {
                format!(", {missing} blobs missing")
            } else {
                String::new()
            };
            println!(
                "{:<24} {:<10} {} {:>9}  {from}{missing}",
                t.name,
                kind,
                &t.digest.to_string()[..19],
                mib(*bytes)
            );
        }
        if rows.is_empty() {
            eprintln!("the store {} has no tags", env.ctx.store.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
