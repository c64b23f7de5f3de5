//! `cargo xtask bench-push`: Cairn's push next to `skopeo copy` of the same OCI layout to
//! Debian's docker-registry on loopback, in the same run; then a repeated push (bytes
//! uploaded) and, with a node, the peak memory of pushing its disk image. Not a test.

use cairn_deliver::publish::publish;
use cairn_project::Project;
use cairn_registry::RegistryOptions;
use cairn_steps::{Context, Error};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct PushBench {
    pub image: String,
    pub blobs: usize,
    pub bytes: u64,
    pub cairn_push_s: f64,
    pub skopeo_copy_s: f64,
    /// skopeo time / Cairn time: above 1 means Cairn is faster.
    pub speedup: f64,
    pub repeated_push_bytes_uploaded: u64,
    pub repeated_push_ms: f64,
    pub node: Option<String>,
    pub node_push_s: Option<f64>,
    pub node_bytes: Option<u64>,
    pub peak_rss_mib: f64,
}

struct LocalRegistry {
    host: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Result<LocalRegistry, Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::other(e))?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::other(e))?
        .port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .map_err(|e| Error::other(e))?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::msg(format!(
                "the benchmark runs Debian's docker-registry on loopback: {e} (apt-get install docker-registry)"
            ))
        })?;
    let host = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&host).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(LocalRegistry {
        host,
        child,
        _dir: dir,
    })
}

fn options(host: &str) -> RegistryOptions {
    RegistryOptions {
        target: format!("{host}/bench"),
        insecure: true,
        credentials: None,
        tag: "latest".into(),
        chunk_size: cairn_deliver::publish::DEFAULT_CHUNK_SIZE,
        parallel: 4,
        create_project: false,
        ca_file: None,
    }
}

pub fn run(ctx: &Context, image: &str, node: Option<&str>) -> Result<PushBench, Error> {
    if !std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("skopeo").is_file()))
    {
        return Err(Error::msg(
            "the benchmark compares against `skopeo`: install it with `apt-get install skopeo`",
        ));
    }
    let project = Project::load(&ctx.root)?;
    let lock = cairn_inputs::lockfile::Lockfile::read(&ctx.lock_path())?
        .ok_or_else(|| Error::msg("inputs.lock does not exist: run `cargo xtask lock`"))?;
    let ctx = Context {
        progress: false,
        substituter: None,
        ..ctx.clone()
    };
    // Built (or cached) before any clock starts.
    cairn_os::container::build_image(&ctx, &project, &lock, image, &[])?;
    if let Some(n) = node {
        cairn_node::build::build_node(&ctx, &project, &lock, n)?;
    }

    let theirs = start_registry()?;
    let start = Instant::now();
    let status = Command::new("skopeo")
        .args(["copy", "--all", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{image}", ctx.store.display()))
        .arg(format!("docker://{}/bench/{image}:latest", theirs.host))
        .status()
        .map_err(|e| Error::at("skopeo", e))?;
    let skopeo_time = start.elapsed();
    if !status.success() {
        return Err(Error::msg("skopeo copy failed"));
    }

    let ours = start_registry()?;
    let start = Instant::now();
    let first = publish(&ctx, &project, &lock, image, &options(&ours.host), None)?;
    let cairn_time = start.elapsed();
    let start = Instant::now();
    let again = publish(&ctx, &project, &lock, image, &options(&ours.host), None)?;
    let repeated = start.elapsed();

    let (mut node_push_s, mut node_bytes) = (None, None);
    if let Some(n) = node {
        let start = Instant::now();
        let p = publish(&ctx, &project, &lock, n, &options(&ours.host), None)?;
        node_push_s = Some((start.elapsed().as_secs_f64() * 100.0).round() / 100.0);
        node_bytes = Some(p.report.bytes_uploaded);
    }
    let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(PushBench {
        image: image.into(),
        blobs: first.report.blobs,
        bytes: first.report.bytes_uploaded,
        cairn_push_s: secs(cairn_time),
        skopeo_copy_s: secs(skopeo_time),
        speedup: (skopeo_time.as_secs_f64() / cairn_time.as_secs_f64() * 100.0).round() / 100.0,
        repeated_push_bytes_uploaded: again.report.bytes_uploaded,
        repeated_push_ms: (repeated.as_secs_f64() * 1e5).round() / 100.0,
        node: node.map(str::to_string),
        node_push_s,
        node_bytes,
        peak_rss_mib: crate::image::peak_rss_mib(),
    })
}
