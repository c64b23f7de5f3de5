use crate::Env;
use cairn_steps::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A bundle written by `cargo xtask export`
    pub bundle: PathBuf,
    /// Refuse the bundle (import nothing) unless every image and node in it carries a
    /// cosign signature by this public key, checked offline from the signatures the bundle
    /// carries (`export` takes them from a store that published signed or pulled)
    #[arg(long, value_name = "KEY.pub")]
    pub verify_key: Option<PathBuf>,
    /// Print what was imported as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let verify = args
        .verify_key
        .as_deref()
        .map(cairn_supply::signed::Verify::load)
        .transpose()?;
    let r = cairn_deliver::bundle::import(&env.ctx, &args.bundle, verify.as_ref())?;
    if args.json {
        let j = serde_json::json!({
            "tags": r.tags,
            "blobs_added": r.blobs_added,
            "blobs_present": r.blobs_present,
            "inputs_added": r.inputs_added,
            "verified_by": verify.as_ref().map(|v| v.key.id()),
        });
        println!("{}", serde_json::to_string_pretty(&j).expect("json"));
    } else {
        eprintln!(
            "imported {} into {}: {} blobs added, {} already there, {} inputs added to the download cache{}",
            r.tags.join(", "),
            env.ctx.store.display(),
            r.blobs_added,
            r.blobs_present,
            r.inputs_added,
            match &verify {
                Some(v) => format!("; every artifact signed by {}", v.path.display()),
                None => String::new(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
