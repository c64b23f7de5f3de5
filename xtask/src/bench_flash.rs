use crate::Env;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The SD node whose image to flash
    #[arg(default_value = "pi-worker")]
    pub node: String,
    /// Runs of each (the best is reported)
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let r = cairn_bench::flash::run(&env.ctx, &args.node, args.runs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "flash {}: image {:.1} MiB, {:.1} MiB mapped by its bmap; best of {}",
        r.node,
        r.image_bytes as f64 / 1048576.0,
        r.mapped_bytes as f64 / 1048576.0,
        r.runs
    );
    println!(
        "  dd bs=4M conv=fsync (no verification)      {:>7.2} s",
        r.dd_s
    );
    println!(
        "  cairn flash --file (bmap, fsync, read-back) {:>7.2} s",
        r.cairn_s
    );
    println!(
        "  cairn/dd                                   {:>7.2}x",
        r.ratio
    );
    Ok(ExitCode::SUCCESS)
}
