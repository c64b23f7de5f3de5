//! Flags of every command that reaches a registry (`RegistryArgs`), and the ones only a
//! push takes (`PushArgs`).

use cairn_registry::RegistryOptions;
use cairn_steps::Error;

#[derive(clap::Args, Clone)]
pub struct RegistryArgs {
    /// Treat the registry as plain HTTP without TLS (only the registry named here)
    #[arg(long)]
    pub insecure: bool,
    /// Log in as this user (a Harbor robot account is `robot$project+name`); the password
    /// is read from stdin with --password-stdin
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password (or robot secret) from stdin
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// The tag in the registry
    #[arg(long, default_value = "latest")]
    pub tag: String,
    /// Trust the CA certificates in this PEM file for the registry (a private CA)
    /// [default: nodes/cluster.toml's registry.ca_file, for the cluster's registry]
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Flags only a push takes (`publish`).
#[derive(clap::Args, Clone)]
pub struct PushArgs {
    /// Largest blob a node's disk image is split into (e.g. 512MiB, 1GiB, 1048576)
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Blob uploads at once
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// When Harbor says the project does not exist, create it (private) through its API
    #[arg(long)]
    pub create_project: bool,
}

impl PushArgs {
    pub fn apply(&self, options: &mut RegistryOptions) {
        options.chunk_size = self.chunk_size;
        options.parallel = self.parallel;
        options.create_project = self.create_project;
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| (&s[..i], &s[i..]));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl RegistryArgs {
    pub fn options(
        &self,
        target: String,
        project: Option<&cairn_project::Project>,
    ) -> Result<RegistryOptions, Error> {
        let ca_file = self
            .ca_file
            .clone()
            .or_else(|| cluster_ca(project?, &target));
        let credentials = match &self.username {
            Some(user) => {
                let mut secret = String::new();
                std::io::stdin()
                    .read_line(&mut secret)
                    .map_err(|e| Error::at("reading the password from stdin", e))?;
                let secret = secret.trim_end_matches(['\n', '\r']).to_string();
                if secret.is_empty() {
                    return Err(Error::msg("--password-stdin: stdin was empty"));
                }
                Some(cairn_registry::Credentials {
                    username: user.clone(),
                    secret,
                    source: "--password-stdin".into(),
                })
            }
            None => None,
        };
        Ok(RegistryOptions {
            target,
            insecure: self.insecure,
            credentials,
            tag: self.tag.clone(),
            // A push's own (PushArgs::apply); what a pull uses of them is the parallelism.
            chunk_size: cairn_deliver::publish::DEFAULT_CHUNK_SIZE,
            parallel: 4,
            create_project: false,
            ca_file,
        })
    }
}

/// `--to`/`--from`, else the cluster's registry and project.
pub fn target(explicit: Option<String>, project: &cairn_project::Project) -> String {
    explicit.unwrap_or_else(|| {
        format!(
            "{}/{}",
            project.cluster.registry.host, project.cluster.registry.project
        )
    })
}

/// The cluster's CA file, when `target` is the cluster's registry.
fn cluster_ca(project: &cairn_project::Project, target: &str) -> Option<std::path::PathBuf> {
    let registry = &project.cluster.registry;
    let host = target.split('/').next()?;
    let ca = registry.ca_file.as_ref()?;
    (host == registry.host).then(|| project.root.join("nodes").join(ca))
}
