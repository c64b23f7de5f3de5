use crate::Env;
use cairn_project::Arch;
use cairn_steps::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// An image (images/NAME.toml) or a node (nodes/NAME.toml)
    pub name: String,
    /// Only these arches of an image [default: all of them; a node has one]
    #[arg(long)]
    pub arch: Vec<Arch>,
    /// Write the document here instead of to stdout
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = crate::read_lock(env)?;
    let doc = cairn_supply::sbom::sbom(&env.ctx, &project, &lock, &args.name, &args.arch)
        .map_err(|e| e.context(format!("the SBOM of {}", args.name)))?;
    match &args.output {
        Some(path) => std::fs::write(path, &doc).map_err(|e| Error::at(path.display(), e))?,
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&doc)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| Error::at("stdout", e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
