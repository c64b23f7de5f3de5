use crate::Env;
use cairn_steps::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A bundle written by `cargo xtask export`
    pub bundle: PathBuf,
    /// Print what was imported as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let r = cairn_deliver::bundle::import(&env.ctx, &args.bundle)?;
    if args.json {
        let j = serde_json::json!({
            "tags": r.tags,
            "blobs_added": r.blobs_added,
            "blobs_present": r.blobs_present,
            "inputs_added": r.inputs_added,
        });
        println!("{}", serde_json::to_string_pretty(&j).expect("json"));
    } else {
        eprintln!(
            "imported {} into {}: {} blobs added, {} already there, {} inputs added to the download cache",
            r.tags.join(", "),
            env.ctx.store.display(),
            r.blobs_added,
            r.blobs_present,
            r.inputs_added
        );
    }
    Ok(ExitCode::SUCCESS)
}
