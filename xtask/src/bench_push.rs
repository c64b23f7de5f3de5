use crate::Env;
use cairn_steps::Error;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Container image to push (all its arches)
    #[arg(default_value = "haproxy")]
    pub image: String,
    /// Also push this node's artifact (its disk image streamed as zstd chunks) and report
    /// the memory it took
    #[arg(long)]
    pub node: Option<String>,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let r = cairn_bench::push::run(&env.ctx, &args.image, args.node.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "push {} ({} blobs, {:.1} MB) to docker-registry on loopback",
        r.image,
        r.blobs,
        r.bytes as f64 / 1e6
    );
    println!("  cairn publish            {:>8.3} s", r.cairn_push_s);
    println!(
        "  skopeo copy --all        {:>8.3} s   (cairn {:.2}x faster)",
        r.skopeo_copy_s, r.speedup
    );
    println!(
        "  repeated cairn publish   {:>8.1} ms, {} bytes uploaded",
        r.repeated_push_ms, r.repeated_push_bytes_uploaded
    );
    if let (Some(n), Some(s), Some(b)) = (&r.node, r.node_push_s, r.node_bytes) {
        println!(
            "  node {n}: {:.2} s, {:.1} MB uploaded (disk image as zstd chunks)",
            s,
            b as f64 / 1e6
        );
    }
    println!("  peak memory (RSS)        {:>8.1} MiB", r.peak_rss_mib);
    Ok(ExitCode::SUCCESS)
}
