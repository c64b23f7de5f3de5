use crate::Env;
use cairn_build::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Image to build
    #[arg(default_value = "haproxy")]
    pub image: String,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    cairn_build::bench::run(&env.ctx, &args.image)?;
    Ok(ExitCode::SUCCESS)
}
