use crate::Env;
use crate::registry_args::RegistryArgs;
use cairn_project::BootMethod;
use cairn_pxe::server::{PxeConfig, PxeNode, ipxe_files, serve_pxe};
use cairn_steps::Error;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// PXE nodes to serve (nodes/NAME.toml with boot = "pxe")
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Every PXE node of the project
    #[arg(long)]
    pub all: bool,
    /// This host's address on the LAN the nodes boot from
    #[arg(long)]
    pub listen: Ipv4Addr,
    /// The HTTP port for the iPXE scripts, kernels, initramfs, roots and secrets
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// The interface of --listen [default: found from the address]
    #[arg(long)]
    pub interface: Option<String>,
    /// A directory of NODE.env secrets files, each served only as /NODE/secrets.env. PXE
    /// cannot authenticate a machine: anyone on the LAN can fetch them while this runs
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// Extra kernel arguments for every node (e.g. `console=ttyS1,115200`)
    #[arg(long, default_value = "")]
    pub kernel_args: String,
    /// Serve the nodes from this registry and namespace: pulled and verified into the store
    /// when the server starts (so a missing or bad node fails before a machine boots)
    #[arg(long)]
    pub from: Option<String>,
    /// With --from: refuse a node unless it carries a cosign signature by this public key
    /// (PEM, as `cargo xtask keygen` or `cosign generate-key-pair` writes it)
    #[arg(long, value_name = "KEY.pub", requires = "from")]
    pub verify_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = crate::read_lock(env)?;
    let names: Vec<String> = if args.all {
        project
            .nodes
            .iter()
            .filter(|n| n.boot == BootMethod::Pxe)
            .map(|n| n.name.clone())
            .collect()
    } else {
        args.names.clone()
    };
    if names.is_empty() {
        return Err(Error::msg(
            "the project has no PXE node (nodes/*.toml with boot = \"pxe\")",
        ));
    }
    // Asked once: --password-stdin reads standard input.
    let pull_options = match &args.from {
        Some(from) => Some((
            from.clone(),
            args.registry.options(from.clone(), Some(&project))?,
        )),
        None => None,
    };
    let verify = args
        .verify_key
        .as_deref()
        .map(cairn_deliver::publish::Verify::load)
        .transpose()?;
    let mut nodes = Vec::new();
    for name in &names {
        let spec = project
            .node(name)
            .ok_or_else(|| Error::msg(format!("no node named {name:?} (no nodes/{name}.toml)")))?;
        if spec.boot != BootMethod::Pxe {
            return Err(Error::msg(format!(
                "node {name} boots from an SD card, not by PXE: write its card with `cargo xtask flash {name}`"
            )));
        }
        let mac = spec
            .mac
            .ok_or_else(|| Error::msg(format!("node {name} has no MAC address")))?;
        // Its secrets checked before anything is pulled, built or served.
        if let Some(dir) = &args.secrets_dir {
            let path = dir.join(format!("{name}.env"));
            let bytes = std::fs::read(&path).map_err(|e| {
                Error::at(format!("secrets file {}", path.display()), e).context(format!(
                    "--secrets-dir serves {name} the file {name}.env, which it needs to join the cluster"
                ))
            })?;
            cairn_node::secrets::check(
                &path,
                &bytes,
                cairn_node::disk::SECRETS_BYTES,
                cairn_node::secrets::Needs::of(&project.cluster, spec),
            )
            .map_err(|e| e.context(format!("the secrets of node {name}")))?;
        }
        let result = match &pull_options {
            Some((from, options)) => {
                cairn_deliver::publish::pull(&env.ctx, name, options, verify.as_ref())
                    .map_err(|e| e.context(format!("pulling {name} from {from}")))?;
                None
            }
            None => Some(
                cairn_node::build::build_node(&env.ctx, &project, &lock, name)
                    .map_err(|e| e.context(format!("building node {name}")))?,
            ),
        };
        let store = env.ctx.open_store()?;
        let files: BTreeMap<String, PathBuf> = match result {
            Some(r) => r
                .files
                .iter()
                .map(|f| (f.title.clone(), store.blob_path(&f.digest)))
                .collect(),
            None => {
                let tag = store.tag(name)?.ok_or_else(|| {
                    Error::msg(format!("node {name} is not in the store after the pull"))
                })?;
                let manifest: serde_json::Value =
                    serde_json::from_slice(&store.read_blob(&tag.digest)?)
                        .map_err(|e| Error::at(format!("node {name}"), e))?;
                manifest["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| {
                        let title = l["annotations"]["org.opencontainers.image.title"].as_str()?;
                        let digest: cairn_formats::Digest = l["digest"].as_str()?.parse().ok()?;
                        Some((title.to_string(), store.blob_path(&digest)))
                    })
                    .collect()
            }
        };
        nodes.push(PxeNode {
            name: name.clone(),
            mac: mac.to_string(),
            files,
        });
    }
    let ipxe = ipxe_files(&env.ctx, &project, &lock)?;
    let log: cairn_pxe::http::Log = Arc::new(|line: String| eprintln!("{line}"));
    let server = serve_pxe(
        &nodes,
        ipxe,
        &PxeConfig {
            address: args.listen,
            http_port: args.http_port,
            interface: args.interface.clone(),
            secrets_dir: args.secrets_dir.clone(),
            kernel_args: args.kernel_args.clone(),
        },
        log,
    )?;
    eprintln!(
        "serving {} on {} (interface {}): proxy DHCP on ports 67 and 4011, TFTP on 69, HTTP on {}",
        names.join(", "),
        args.listen,
        server.interface,
        server.http.addr
    );
    for n in &nodes {
        let secrets = server
            .routes
            .iter()
            .any(|r| r == &format!("/{}/secrets.env", n.name));
        eprintln!(
            "  {} ({}): http://{}/{}/boot.ipxe, secrets {}",
            n.name,
            n.mac,
            server.http.addr,
            n.name,
            if secrets {
                "served"
            } else {
                "none (the node will say they are absent)"
            }
        );
    }
    eprintln!(
        "PXE cannot authenticate a machine: anyone on this LAN can fetch what is served. Stop with Ctrl-C."
    );
    loop {
        std::thread::park();
    }
}
