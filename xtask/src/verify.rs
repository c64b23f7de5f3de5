use crate::Env;
use crate::registry_args::RegistryArgs;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The image or node to check
    pub name: String,
    /// Rebuild NAME in a scratch store from the lock and compare every digest (what verify
    /// does; the flag is accepted, and implied)
    #[arg(long)]
    pub rebuild: bool,
    /// Compare with what this registry and namespace holds instead of the store
    #[arg(long, value_name = "REG/NS")]
    pub against: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = crate::read_lock(env)?;
    let against = match &args.against {
        Some(target) => Some(args.registry.options(target.clone(), Some(&project))?),
        None => None,
    };
    let start = std::time::Instant::now();
    let v = cairn_deliver::verify::verify_rebuild(
        &env.ctx,
        &project,
        &lock,
        &args.name,
        against.as_ref(),
    )
    .map_err(|e| e.context(format!("verifying {}", args.name)))?;
    let took = start.elapsed().as_secs_f64();
    if args.json {
        let mut doc = v.to_json();
        doc["seconds"] = serde_json::json!((took * 10.0).round() / 10.0);
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else if v.differences.is_empty() {
        eprintln!(
            "{}: rebuilt bit for bit ({}) in {took:.1} s",
            v.name, v.rebuilt
        );
    } else {
        eprintln!(
            "{}: NOT reproduced: {} expected, {} rebuilt ({took:.1} s)",
            v.name, v.expected, v.rebuilt
        );
        for d in &v.differences {
            eprintln!("  {d}");
        }
    }
    Ok(if v.differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
