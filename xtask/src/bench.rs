use crate::Env;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Container image to build (all its arches)
    #[arg(default_value = "haproxy")]
    pub image: String,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let r = cairn_bench::image::run(&env.ctx, &args.image)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    println!("image {} (all arches), downloads cached", r.image);
    println!("  cold build              {:>9.2} s", r.cold_build_s);
    println!(
        "  warm no-op build        {:>9.2} ms in process, {:.2} ms as a command",
        r.warm_build_ms, r.warm_command_ms
    );
    println!("  peak memory (RSS)       {:>9.1} MiB", r.peak_rss_mib);
    println!(
        "  layer tar               {:>9.1} MB",
        r.layer_tar_bytes as f64 / 1e6
    );
    println!(
        "  gzip -6: cairn          {:>9.1} MB/s -> {} bytes (1 MiB members on every core, the same bytes on any number)",
        r.gzip_cairn_mb_s, r.gzip_cairn_bytes
    );
    println!(
        "  gzip -6: pigz -p2       {:>9.1} MB/s -> {} bytes  (cairn/pigz {:.2}x)",
        r.gzip_pigz_p2_mb_s,
        r.gzip_pigz_bytes,
        r.gzip_cairn_mb_s / r.gzip_pigz_p2_mb_s
    );
    println!(
        "  sha256: cairn writer    {:>9.1} MB/s",
        r.sha256_cairn_mb_s
    );
    println!(
        "  sha256: sha2 crate      {:>9.1} MB/s",
        r.sha256_sha2_crate_mb_s
    );
    println!("  sha256: sha256sum       {:>9.1} MB/s", r.sha256sum_mb_s);
    Ok(ExitCode::SUCCESS)
}
