use crate::Env;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Nodes to build: nodes/NAME.toml (SD-card image or PXE bundle)
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Build every node in nodes/
    #[arg(long)]
    pub all: bool,
    /// Print each node's id and outputs (digest, size, path) as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = crate::read_lock(env)?;
    let names: Vec<String> = if args.all {
        project.nodes.iter().map(|n| n.name.clone()).collect()
    } else {
        args.names.clone()
    };
    let mut out = Vec::new();
    for name in &names {
        let r = cairn_node::build::build_node(&env.ctx, &project, &lock, name)
            .map_err(|e| e.context(format!("building node {name}")))?;
        if !args.json {
            let how = if r.cached {
                "cached"
            } else if r.base_cached {
                "built, base OS cached"
            } else {
                "built"
            };
            eprintln!(
                "{name} ({}, {}): node id {} ({how})",
                r.arch.as_str(),
                match r.boot {
                    cairn_project::BootMethod::Sd => "SD card",
                    cairn_project::BootMethod::Pxe => "PXE",
                },
                r.node_id.hex()
            );
            for f in &r.files {
                eprintln!(
                    "  {:<24} {} {:>8.1} MiB",
                    f.title,
                    f.digest,
                    f.size as f64 / 1048576.0
                );
            }
            eprintln!("  tagged {name} in {}", env.ctx.store.display());
        }
        out.push(r.to_json(&env.ctx.store));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "nodes": out })).expect("json")
        );
    }
    Ok(ExitCode::SUCCESS)
}
