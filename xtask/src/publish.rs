use crate::Env;
use crate::registry_args::{PushArgs, RegistryArgs, target};
use cairn_project::ImageKind;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Images (images/NAME.toml) or nodes (nodes/NAME.toml) to build if needed and push
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Every container image and every node
    #[arg(long)]
    pub all: bool,
    /// Registry and namespace, e.g. harbor.example.lan/homelab [default: cluster.toml's registry.host/registry.project]
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub push: PushArgs,
    /// Sign every manifest pushed, in cosign's format (tag sha256-<hex>.sig), with this key:
    /// PKCS#8 PEM P-256 (`cargo xtask keygen`, openssl) or cosign's encrypted key (password
    /// in COSIGN_PASSWORD)
    #[arg(long, value_name = "KEY")]
    pub sign: Option<std::path::PathBuf>,
    /// Print what was pushed (digests, blobs and bytes uploaded) as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = crate::read_lock(env)?;
    let names: Vec<String> = if args.all {
        project
            .images
            .iter()
            .filter(|i| i.kind == ImageKind::Container)
            .map(|i| i.name.clone())
            .chain(project.nodes.iter().map(|n| n.name.clone()))
            .collect()
    } else {
        args.names.clone()
    };
    let to = target(args.to.clone(), &project);
    let mut options = args.registry.options(to.clone(), Some(&project))?;
    args.push.apply(&mut options);
    let registry = to.split('/').next().unwrap_or(&to).to_string();
    // The key is read before anything is built or pushed.
    let key = args
        .sign
        .as_deref()
        .map(cairn_trust::SigningKey::load)
        .transpose()
        .map_err(|e| Error::msg(e.0))?;
    let mut out = Vec::new();
    for name in &names {
        let p = cairn_deliver::publish::publish(
            &env.ctx,
            &project,
            &lock,
            name,
            &options,
            key.as_ref(),
        )
        .map_err(|e| e.context(format!("publishing {name}")))?;
        if !args.json {
            eprintln!(
                "{name}: pushed {registry}/{}:{} ({}) {}: {} of {} blobs uploaded ({:.1} MiB), {} already there, {} mounted",
                p.repository,
                p.tag,
                p.kind,
                p.digest,
                p.report.blobs_uploaded,
                p.report.blobs,
                p.report.bytes_uploaded as f64 / 1048576.0,
                p.report.blobs_present,
                p.report.blobs_mounted
            );
            if !p.signatures.is_empty() {
                eprintln!(
                    "{name}: signed {} manifest(s) with {}",
                    p.signatures.len(),
                    key.as_ref().map(|k| k.public().id()).unwrap_or_default()
                );
            }
        }
        out.push(p.to_json(&registry));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "published": out })).expect("json")
        );
    }
    Ok(ExitCode::SUCCESS)
}
