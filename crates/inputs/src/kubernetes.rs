//! The Kubernetes distribution's binaries (kubeadm, kubelet and kubectl, or k3s): URL
//! inputs named by `cluster.toml`, pinned by sha256 in `inputs.lock`, added to the base OS
//! of every node. Pinning happens once, with `cargo xtask prefetch URL [--file PATH]`.

use crate::lockfile::{LockedUrl, Lockfile};
use cairn_formats::Digest;
use cairn_project::{Arch, ClusterSpec, Distribution};
use cairn_steps::Error;

/// One binary the cluster's nodes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesInput {
    /// `kubernetes/<name>-<go arch>`, the lock's name for it.
    pub name: String,
    pub url: String,
    /// Where it goes in the node's root filesystem.
    pub path: String,
}

fn go_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Armv7 => "arm",
        Arch::Aarch64 => "arm64",
    }
}

/// The binaries for `arch`, from the upstream release URLs (or `kubernetes.download_url`).
pub fn inputs(cluster: &ClusterSpec, arch: Arch) -> Vec<KubernetesInput> {
    let k = &cluster.kubernetes;
    let version = &k.version;
    let goarch = go_arch(arch);
    let template = |name: &str, default: String| -> String {
        match &k.download_url {
            Some(t) => t
                .replace("{version}", version)
                .replace("{go_arch}", goarch)
                .replace("{name}", name),
            None => default,
        }
    };
    match k.distribution {
        Distribution::Kubeadm => ["kubeadm", "kubelet", "kubectl"]
            .iter()
            .map(|name| KubernetesInput {
                name: format!("kubernetes/{name}-{goarch}"),
                url: template(
                    name,
                    format!("https://dl.k8s.io/release/v{version}/bin/linux/{goarch}/{name}"),
                ),
                path: format!("/usr/local/bin/{name}"),
            })
            .collect(),
        Distribution::K3s => {
            let suffix = match arch {
                Arch::X86_64 => "",
                Arch::Armv7 => "-armhf",
                Arch::Aarch64 => "-arm64",
            };
            vec![KubernetesInput {
                name: format!("kubernetes/k3s-{goarch}"),
                url: template(
                    "k3s",
                    format!(
                        "https://github.com/k3s-io/k3s/releases/download/v{version}/k3s{suffix}"
                    ),
                ),
                path: "/usr/local/bin/k3s".into(),
            }]
        }
    }
}

/// Every input of every arch the cluster's nodes use.
pub fn all_inputs(cluster: &ClusterSpec, arches: &[Arch]) -> Vec<KubernetesInput> {
    let mut out: Vec<KubernetesInput> = arches.iter().flat_map(|a| inputs(cluster, *a)).collect();
    out.sort_by(|a, b| a.url.cmp(&b.url));
    out.dedup();
    out
}

/// The pinned digest and size of each input, or one error naming every unpinned input and
/// the command that pins it.
pub fn pins(
    lock: &Lockfile,
    inputs: &[KubernetesInput],
) -> Result<Vec<(KubernetesInput, Digest, u64)>, Error> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for input in inputs {
        match lock.url.iter().find(|u| u.url == input.url) {
            Some(u) => {
                let digest = Digest::from_hex(&u.sha256)
                    .map_err(|e| Error::msg(format!("inputs.lock: url {}: {e}", u.url)))?;
                out.push((input.clone(), digest, u.size));
            }
            None => missing.push(input),
        }
    }
    if !missing.is_empty() {
        let mut msg = String::from("inputs.lock has no hash for these Kubernetes inputs:");
        for m in &missing {
            msg.push_str(&format!("\n  {} ({})", m.name, m.url));
        }
        msg.push_str(&format!(
            "\npin each once: `cargo xtask prefetch {}` where the URL can be fetched, or, with a copy of the file, `cargo xtask prefetch {} --file PATH`",
            missing[0].url, missing[0].url
        ));
        return Err(Error::msg(msg));
    }
    Ok(out)
}

/// Pins `url` to the file at `file` (or the fetched body): the content goes into the
/// download cache and the lock gets (or keeps) its `[[url]]` entry. A URL pinned before to
/// other content is refused.
pub fn prefetch(
    ctx: &cairn_steps::Context,
    url: &str,
    file: Option<&std::path::Path>,
    name: Option<&str>,
) -> Result<LockedUrl, Error> {
    let cache = crate::fetch::Cache::new(&ctx.cache);
    let (digest, size) = match file {
        Some(path) => cache.add_file(path)?,
        None => cache.fetch_unpinned(url, url)?,
    };
    let lock_path = ctx.lock_path();
    let mut lock = Lockfile::read(&lock_path)?.unwrap_or_else(|| Lockfile {
        version: crate::lockfile::VERSION,
        ..Default::default()
    });
    if let Some(old) = lock.url.iter().find(|u| u.url == url) {
        if old.sha256 != digest.hex() {
            return Err(Error::msg(format!(
                "{} pins {url} to sha256:{}, but {} is {digest}: refusing to change a pin (if upstream really changed the file, delete its [[url]] entry from inputs.lock first)",
                lock_path.display(),
                old.sha256,
                file.map_or_else(
                    || "the fetched file".to_string(),
                    |f| f.display().to_string()
                ),
            )));
        }
        return Ok(old.clone());
    }
    let name = name.map(str::to_string).unwrap_or_else(|| {
        let project = cairn_project::Project::load(&ctx.root).ok();
        project
            .and_then(|p| {
                all_inputs(&p.cluster, &Arch::ALL)
                    .into_iter()
                    .find(|i| i.url == url)
                    .map(|i| i.name)
            })
            .unwrap_or_else(|| {
                format!(
                    "url/{}",
                    url.rsplit('/')
                        .next()
                        .filter(|s| !s.is_empty())
                        .unwrap_or("file")
                )
            })
    });
    let pinned = LockedUrl {
        name,
        url: url.to_string(),
        size,
        sha256: digest.hex(),
    };
    lock.url.push(pinned.clone());
    lock.url.sort();
    crate::lock::write_lock(ctx, &lock)?;
    Ok(pinned)
}
