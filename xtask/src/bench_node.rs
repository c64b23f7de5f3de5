use crate::Env;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The node to build cold, warm and with one SSH key changed
    #[arg(default_value = "pi-worker")]
    pub node: String,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let r = cairn_bench::node::run(&env.ctx, &args.node)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    println!("node {} in an empty store, downloads cached", r.node);
    println!("  cold build-node         {:>9.2} s", r.cold_build_s);
    println!(
        "  warm build-node --all   {:>9.2} ms (every node cached, in process)",
        r.warm_all_ms
    );
    println!(
        "  one SSH key changed     {:>9.2} s ({:.1}% of cold)",
        r.one_key_changed_s, r.one_key_changed_percent_of_cold
    );
    println!(
        "  squashfs zstd-3: cairn  {:>9.2} s -> {} bytes ({} entries)",
        r.squashfs_cairn_s, r.squashfs_cairn_bytes, r.squashfs_files
    );
    println!(
        "  squashfs zstd-3: mksquashfs -processors 2 {:.2} s -> {} bytes (cairn/mksquashfs: time {:.2}x, size {:+.2}%)",
        r.squashfs_mksquashfs_s,
        r.squashfs_mksquashfs_bytes,
        r.squashfs_cairn_s / r.squashfs_mksquashfs_s,
        (r.squashfs_cairn_bytes as f64 / r.squashfs_mksquashfs_bytes as f64 - 1.0) * 100.0
    );
    println!("  peak memory (RSS)       {:>9.1} MiB", r.peak_rss_mib);
    Ok(ExitCode::SUCCESS)
}
