use crate::Env;
use cairn_steps::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Images and nodes to export (built first when needed)
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Every container image and node of the project
    #[arg(long)]
    pub all: bool,
    /// The bundle to write: an OCI image layout in a tar (skopeo reads it as oci-archive:FILE:NAME)
    #[arg(long, short)]
    pub output: PathBuf,
    /// Also carry every input inputs.lock pins (the .debs, the Kubernetes binaries), so the
    /// importing machine can change a node and rebuild it with no network
    #[arg(long)]
    pub with_inputs: bool,
    /// Print what was written as JSON
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
            .filter(|i| i.kind == cairn_project::ImageKind::Container)
            .map(|i| i.name.to_string())
            .chain(project.nodes.iter().map(|n| n.name.clone()))
            .collect()
    } else {
        args.names.clone()
    };
    let r = cairn_deliver::bundle::export(
        &env.ctx,
        &project,
        &lock,
        &names,
        args.with_inputs,
        &args.output,
    )?;
    if args.json {
        let j = serde_json::json!({
            "bundle": args.output.display().to_string(),
            "names": r.names,
            "blobs": r.blobs,
            "inputs": r.inputs,
            "bytes": r.bytes,
        });
        println!("{}", serde_json::to_string_pretty(&j).expect("json"));
    } else {
        eprintln!(
            "wrote {} ({:.1} MiB): {}; {} blobs{}",
            args.output.display(),
            r.bytes as f64 / 1048576.0,
            r.names.join(", "),
            r.blobs,
            if args.with_inputs {
                format!(", {} of them inputs", r.inputs)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
