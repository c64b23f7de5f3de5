use crate::Env;
use cairn_steps::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The URL to pin (as named by the error that asked for it)
    pub url: String,
    /// Take the content from this local file instead of fetching the URL
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Pin to this sha256, read from upstream's published checksum file, without
    /// downloading anything (with --file: check the file against it)
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// The lock's name for the input [default: from cluster.toml, else the URL's file name]
    #[arg(long)]
    pub name: Option<String>,
    /// Print the pin (name, URL, sha256, size) as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let pinned = cairn_inputs::kubernetes::prefetch(
        &env.ctx,
        &args.url,
        args.file.as_deref(),
        args.sha256.as_deref(),
        args.name.as_deref(),
    )
    .map_err(|e| e.context(format!("pinning {}", args.url)))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "name": pinned.name,
                "url": pinned.url,
                "sha256": pinned.sha256,
                "size": pinned.size,
                "lock": env.ctx.lock_path().display().to_string(),
            })
        );
    } else {
        println!("sha256:{}", pinned.sha256);
    }
    eprintln!(
        "pinned {} ({}{}) in {}",
        pinned.name,
        pinned.url,
        pinned
            .size
            .map_or_else(String::new, |s| format!(", {s} bytes")),
        env.ctx.lock_path().display()
    );
    Ok(ExitCode::SUCCESS)
}
