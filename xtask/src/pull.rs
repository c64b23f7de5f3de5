use crate::Env;
use crate::registry_args::{RegistryArgs, target};
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Images or nodes to pull into the store (tagged with the name)
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Registry and namespace, e.g. harbor.example.lan/homelab [default: cluster.toml's registry.host/registry.project]
    #[arg(long)]
    pub from: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Refuse an image or node unless it carries a cosign signature by this public key
    /// (PEM, as `cargo xtask keygen` or `cosign generate-key-pair` writes it)
    #[arg(long, value_name = "KEY.pub")]
    pub verify_key: Option<std::path::PathBuf>,
    /// Print what was pulled as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    // The registry may be all there is: without a project, --from is needed.
    let project = crate::load_project(env);
    let from = match (&args.from, &project) {
        (Some(f), _) => f.clone(),
        (None, Ok(project)) => target(None, project),
        (None, Err(e)) => {
            return Err(Error::msg(format!(
                "no --from given and no cluster.toml to take the registry from: {e}"
            )));
        }
    };
    let options = args.registry.options(from.clone(), project.as_ref().ok())?;
    let verify = args
        .verify_key
        .as_deref()
        .map(cairn_deliver::publish::Verify::load)
        .transpose()?;
    let mut out = Vec::new();
    for name in &args.names {
        let p = cairn_deliver::publish::pull(&env.ctx, name, &options, verify.as_ref())
            .map_err(|e| e.context(format!("pulling {name}")))?;
        if !args.json {
            eprintln!(
                "{name}: pulled {} {} into {} ({} blobs, {} already there, {:.1} MiB downloaded)",
                p.kind,
                p.digest,
                env.ctx.store.display(),
                p.report.blobs,
                p.report.blobs_present,
                p.report.bytes_downloaded as f64 / 1048576.0
            );
        }
        out.push(serde_json::json!({
            "name": name,
            "kind": p.kind,
            "digest": p.digest.to_string(),
            "blobs": p.report.blobs,
            "blobs_present": p.report.blobs_present,
            "bytes_downloaded": p.report.bytes_downloaded,
            "resumed": p.report.resumed,
            "verified_by": verify.as_ref().map(|v| v.key.id()),
        }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "pulled": out })).expect("json")
        );
    }
    Ok(ExitCode::SUCCESS)
}
