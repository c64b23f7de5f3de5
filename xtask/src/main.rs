//! Cairn's command line: parse flags, find the project, dispatch to one `run` per task.

mod bench;
mod bench_compare;
mod bench_flash;
mod bench_node;
mod bench_push;
mod boot_test;
mod build_image;
mod build_node;
mod build_os;
mod export;
mod flash;
mod fuzz;
mod import;
mod keygen;
mod lock;
mod prefetch;
mod publish;
mod pull;
mod registry_args;
mod sbom;
mod serve_pxe;
mod store;
mod test;
mod verify;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Build the OS and container images of a bare-metal Kubernetes cluster, reproducibly.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    /// Project root holding images/, nodes/ and inputs.lock [default: the nearest directory,
    /// from the current one upwards, with nodes/cluster.toml or inputs.lock]
    #[arg(long, global = true, env = "CAIRN_ROOT")]
    root: Option<PathBuf>,
    /// The store (an OCI image layout) [default: ROOT/artifacts]
    #[arg(long, global = true, env = "CAIRN_STORE")]
    store: Option<PathBuf>,
    /// Download cache shared between checkouts [default: $XDG_CACHE_HOME/cairn]
    #[arg(long, global = true, env = "CAIRN_CACHE_DIR")]
    download_cache: Option<PathBuf>,
    /// A registry and namespace used as a shared build cache (e.g. harbor.example.lan/homelab):
    /// steps are looked up there before they are built, and built ones are published there
    #[arg(long, global = true, env = "CAIRN_BUILD_CACHE")]
    cache: Option<String>,
    /// Reach the --cache registry over plain HTTP (no TLS)
    #[arg(long, global = true)]
    cache_insecure: bool,
    /// Sign every step published to the --cache registry with this key (PKCS#8 PEM P-256, or
    /// cosign's encrypted key with COSIGN_PASSWORD); its public key then also decides
    /// which entries are used
    #[arg(long, global = true, env = "CAIRN_CACHE_SIGN", value_name = "KEY")]
    cache_sign: Option<PathBuf>,
    /// Use only --cache entries this public key signed for the step; others are ignored with
    /// a warning and the step is built
    #[arg(
        long,
        global = true,
        env = "CAIRN_CACHE_VERIFY_KEY",
        value_name = "KEY.pub"
    )]
    cache_verify_key: Option<PathBuf>,
    /// No progress bars
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve every image's Debian packages per arch, pin the nodes' Kubernetes binaries from upstream's checksum files, and write inputs.lock
    Lock(lock::Args),
    /// Build a container image (all its arches, or those given) into the store
    BuildImage(build_image::Args),
    /// Build an OS image's base root filesystem (squashfs), kernel and initramfs per arch
    BuildOs(build_os::Args),
    /// Build a node's bootable artifact: an SD-card image (Raspberry Pi) or a PXE bundle (x86)
    BuildNode(build_node::Args),
    /// Boot a node's artifact under QEMU and check what it reports (hostname, address, role, secrets)
    BootTest(boot_test::Args),
    /// Write a node's SD-card image to a card or an image file, with its secrets, and verify it
    Flash(flash::Args),
    /// Write images and nodes (and with --with-inputs every pinned input) into one bundle
    Export(export::Args),
    /// Read a bundle written by `export` into the store, verifying every digest first
    Import(import::Args),
    /// Boot the PXE nodes on this LAN: proxy DHCP, TFTP and HTTP from the store, with secrets
    ServePxe(serve_pxe::Args),
    /// Push images and nodes to a registry (Harbor or any OCI registry)
    Publish(publish::Args),
    /// Pull images and nodes from a registry into the store
    Pull(pull::Args),
    /// Rebuild an image or node from the lock and compare it with the store (or a registry)
    Verify(verify::Args),
    /// Write the SPDX 2.3 SBOM of an image or node, from the lock
    Sbom(sbom::Args),
    /// Make a signing key pair for `publish --sign` (PREFIX.key) and `--verify-key` (PREFIX.pub)
    Keygen(keygen::Args),
    /// Pin a URL input (e.g. a Kubernetes binary) in inputs.lock: fetched, from a local file, or to a published sha256
    Prefetch(prefetch::Args),
    /// Check or clean the store
    #[command(subcommand)]
    Store(store::Command),
    /// Install the host tools the tests use (apt-get), run every test, then every fuzz target for a short time
    Test(test::Args),
    /// Run the cargo-fuzz targets (every parser of outside input, the writers' round trips) from seeds of real inputs
    Fuzz(fuzz::Args),
    /// Measure build speed, compression and hashing against peer tools
    Bench(bench::Args),
    /// Every speed goal in one run, each against its peer tool (mmdebstrap, mksquashfs, pigz)
    BenchCompare(bench_compare::Args),
    /// Measure node builds (cold, warm, one SSH key changed) and squashfs against mksquashfs
    BenchNode(bench_node::Args),
    /// Measure `flash --file` (bmap, fsync, read-back) against `dd bs=4M conv=fsync`
    BenchFlash(bench_flash::Args),
    /// Measure pushing to a registry on loopback against `skopeo copy`
    BenchPush(bench_push::Args),
}

pub struct Env {
    pub ctx: cairn_steps::Context,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = match cli.root.clone().map_or_else(find_root, Ok) {
        Ok(root) => root.canonicalize_or_self(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = matches!(&cli.command, Command::BuildImage(a) if a.json)
        || matches!(&cli.command, Command::BuildOs(a) if a.json)
        || matches!(&cli.command, Command::Lock(a) if a.json)
        || matches!(&cli.command, Command::BuildNode(a) if a.json)
        || matches!(&cli.command, Command::BootTest(a) if a.json)
        || matches!(&cli.command, Command::Publish(a) if a.json)
        || matches!(&cli.command, Command::Pull(a) if a.json)
        || matches!(&cli.command, Command::Flash(a) if a.json)
        || matches!(&cli.command, Command::Export(a) if a.json)
        || matches!(&cli.command, Command::Import(a) if a.json)
        || matches!(&cli.command, Command::Verify(a) if a.json)
        || matches!(&cli.command, Command::Keygen(a) if a.json)
        || matches!(&cli.command, Command::Prefetch(a) if a.json)
        || matches!(
            &cli.command,
            Command::Store(
                store::Command::Verify { json: true, .. }
                    | store::Command::Gc { json: true, .. }
                    | store::Command::List { json: true }
            )
        );
    let cache_trust = match cache_trust(cli.cache_sign.as_deref(), cli.cache_verify_key.as_deref())
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = cairn_steps::Context {
        store: cli.store.unwrap_or_else(|| root.join("artifacts")),
        cache: cli
            .download_cache
            .unwrap_or_else(cairn_steps::Context::default_cache),
        progress: !cli.quiet && !json && std::io::stderr().is_terminal(),
        substituter: cli.cache.map(|target| {
            let options = cairn_registry::RegistryOptions {
                target,
                insecure: cli.cache_insecure,
                credentials: None,
                tag: String::new(),
                chunk_size: cairn_deliver::publish::DEFAULT_CHUNK_SIZE,
                parallel: 4,
                create_project: false,
                ca_file: None,
            };
            std::sync::Arc::new(cairn_registry::cache::RemoteCache::new(
                options,
                cache_trust,
            )) as std::sync::Arc<dyn cairn_steps::Substituter>
        }),
        root,
    };
    let env = Env { ctx };
    let (store, cache) = (env.ctx.store.clone(), env.ctx.cache.clone());
    let result = match cli.command {
        Command::Lock(args) => lock::run(&env, args),
        Command::BuildImage(args) => build_image::run(&env, args),
        Command::BuildOs(args) => build_os::run(&env, args),
        Command::BuildNode(args) => build_node::run(&env, args),
        Command::BootTest(args) => boot_test::run(&env, args),
        Command::Prefetch(args) => prefetch::run(&env, args),
        Command::Keygen(args) => keygen::run(&env, args),
        Command::Sbom(args) => sbom::run(&env, args),
        Command::Verify(args) => verify::run(&env, args),
        Command::Flash(args) => flash::run(&env, args),
        Command::ServePxe(args) => serve_pxe::run(&env, args),
        Command::Export(args) => export::run(&env, args),
        Command::Import(args) => import::run(&env, args),
        Command::Publish(args) => publish::run(&env, args),
        Command::Pull(args) => pull::run(&env, args),
        Command::Store(cmd) => store::run(&env, cmd),
        Command::Bench(args) => bench::run(&env, args),
        Command::BenchCompare(args) => bench_compare::run(&env, args),
        Command::BenchNode(args) => bench_node::run(&env, args),
        Command::BenchPush(args) => bench_push::run(&env, args),
        Command::BenchFlash(args) => bench_flash::run(&env, args),
        Command::Test(args) => test::run(&env, args),
        Command::Fuzz(args) => fuzz::run(&env, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if json {
                // What a script reading --json gets instead of the result.
                println!(
                    "{}",
                    serde_json::json!({"error": e.to_string(), "kind": format!("{:?}", e.kind())})
                );
            }
            if e.is_out_of_space() {
                eprintln!(
                    "error: a disk is full: the store is {} and the download cache {}. Free space there (`cargo xtask store gc` drops what no tag reaches), or point --store or --download-cache at a larger disk; the store holds nothing of the failed step",
                    store.display(),
                    cache.display()
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// The build cache's signing key and the key whose signatures count (the signing key's own
/// unless `--cache-verify-key` names another).
fn cache_trust(
    sign: Option<&std::path::Path>,
    verify: Option<&std::path::Path>,
) -> Result<cairn_registry::cache::Trust, String> {
    use std::sync::Arc;
    let sign = sign
        .map(cairn_trust::SigningKey::load)
        .transpose()
        .map_err(|e| format!("--cache-sign: {}", e.0))?;
    let verify = match verify {
        Some(path) => Some((
            cairn_trust::PublicKey::load(path)
                .map_err(|e| format!("--cache-verify-key: {}", e.0))?,
            path.to_path_buf(),
        )),
        None => sign
            .as_ref()
            .map(|k| (k.public(), PathBuf::from("the --cache-sign key"))),
    };
    Ok(cairn_registry::cache::Trust {
        sign: sign.map(Arc::new),
        verify: verify.map(Arc::new),
    })
}

/// The project root when `--root` is not given: from where `cargo xtask` runs, upwards, the
/// first directory that holds `nodes/cluster.toml` or `inputs.lock`; else the workspace cargo
/// ran in (`CARGO_MANIFEST_DIR`, which cargo sets for `cargo run` at run time). Never the
/// path compiled into the binary: two checkouts sharing one target directory share one
/// binary, and each must build its own specs into its own store.
fn find_root() -> Result<PathBuf, cairn_steps::Error> {
    let is_root = |d: &std::path::Path| {
        d.join("nodes/cluster.toml").is_file() || d.join("inputs.lock").is_file()
    };
    let cwd =
        std::env::current_dir().map_err(|e| cairn_steps::Error::at("the current directory", e))?;
    if let Some(found) = cwd.ancestors().find(|d| is_root(d)) {
        return Ok(found.to_path_buf());
    }
    if let Some(manifest) = std::env::var_os("CARGO_MANIFEST_DIR") {
        let workspace = PathBuf::from(manifest).join("..");
        if is_root(&workspace) {
            return Ok(workspace);
        }
    }
    Err(cairn_steps::Error::msg(format!(
        "no Cairn project at or above {}: run `cargo xtask` inside a checkout (a directory with nodes/cluster.toml or inputs.lock), or pass --root",
        cwd.display()
    )))
}

trait CanonicalizeOrSelf {
    fn canonicalize_or_self(self) -> PathBuf;
}

impl CanonicalizeOrSelf for PathBuf {
    fn canonicalize_or_self(self) -> PathBuf {
        self.canonicalize().unwrap_or(self)
    }
}

/// Loads the project's specs.
pub fn load_project(env: &Env) -> Result<cairn_project::Project, cairn_steps::Error> {
    Ok(cairn_project::Project::load(&env.ctx.root)?)
}

/// Reads inputs.lock, which must exist.
pub fn read_lock(env: &Env) -> Result<cairn_inputs::lockfile::Lockfile, cairn_steps::Error> {
    cairn_inputs::lockfile::Lockfile::read(&env.ctx.lock_path())?.ok_or_else(|| {
        cairn_steps::Error::msg(format!(
            "{} does not exist: run `cargo xtask lock`",
            env.ctx.lock_path().display()
        ))
    })
}
