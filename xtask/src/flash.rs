use crate::Env;
use crate::registry_args::RegistryArgs;
use cairn_deliver::flash::{FlashConfig, NodeImage, Target, flash};
use cairn_steps::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("to").required(true).args(["device", "file"]))]
pub struct Args {
    /// The node whose SD-card image to write (from the store: build it, or pull it with --from)
    pub node: String,
    /// A whole card: /dev/sdX, /dev/mmcblk0 (refused when mounted, in use, not removable
    /// without --force, or too small)
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// An image file instead of a card (created when missing)
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The node's secrets (KEY=value lines, e.g. join_token=...), written into the card's
    /// reserved cairn-secrets.env; never into the store
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Write to a device that does not say it is removable
    #[arg(long)]
    pub force: bool,
    /// Pull the node from this registry and namespace first (e.g. harbor.example.lan/homelab)
    #[arg(long)]
    pub from: Option<String>,
    /// Refuse the node unless it carries a cosign signature by this public key (PEM, as
    /// `cargo xtask keygen` or `cosign generate-key-pair` writes it): checked in the registry
    /// before pulling with --from, and always offline against the signatures the store
    /// keeps beside the node (from a signed publish, a pull or an imported bundle)
    #[arg(long, value_name = "KEY.pub")]
    pub verify_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print what was written as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let secrets = match &args.secrets {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::at(format!("secrets file {}", path.display()), e))?;
            // What the node needs, from its file when this checkout has it (a node pulled
            // onto another machine gets the checks every node needs).
            let project = crate::load_project(env).ok();
            let needs = project
                .as_ref()
                .and_then(|p| {
                    Some(cairn_node::secrets::Needs::of(
                        &p.cluster,
                        p.node(&args.node)?,
                    ))
                })
                .unwrap_or_default();
            cairn_node::secrets::check(path, &bytes, cairn_node::disk::SECRETS_BYTES, needs)
                .map_err(|e| e.context(format!("the secrets of node {}", args.node)))?;
            Some(bytes)
        }
        None => None,
    };
    let verify = args
        .verify_key
        .as_deref()
        .map(cairn_supply::signed::Verify::load)
        .transpose()?;
    if let Some(from) = &args.from {
        let project = crate::load_project(env).ok();
        let options = args.registry.options(from.clone(), project.as_ref())?;
        cairn_deliver::publish::pull(&env.ctx, &args.node, &options, verify.as_ref())
            .map_err(|e| e.context(format!("pulling {} from {from}", args.node)))?;
    }
    if let Some(v) = &verify {
        cairn_supply::signed::verify_stored(&env.ctx, &args.node, v)
            .map_err(|e| e.context(format!("flashing {}", args.node)))?;
    }
    let store = env.ctx.open_store()?;
    let image = NodeImage::from_store(&store, &args.node)?;
    let target = match (args.device, args.file) {
        (Some(device), _) => Target::Device(device),
        (None, Some(file)) => Target::File(file),
        (None, None) => unreachable!("clap requires one"),
    };
    let report = flash(
        &store,
        &image,
        &FlashConfig {
            target,
            secrets,
            force: args.force,
            progress: env.ctx.progress,
        },
    )
    .map_err(|e| e.context(format!("flashing {}", args.node)))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).expect("json")
        );
    } else {
        eprintln!(
            "{}: wrote {:.1} MiB of {:.1} MiB to {} ({} skipped as free space), read back and verified in {:.1} s; secrets {}",
            report.node,
            report.bytes_written as f64 / 1048576.0,
            report.image_size as f64 / 1048576.0,
            report.target.display(),
            format_args!("{:.1} MiB", report.bytes_skipped as f64 / 1048576.0),
            report.seconds,
            if report.secrets {
                "written"
            } else {
                "not given (the node will say they are absent)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
