//! The Kubernetes distribution's binaries (kubeadm, kubelet and kubectl, or k3s): URL
//! inputs named by `cluster.toml`, pinned by sha256 in `inputs.lock`, added to the base OS
//! of every node. `cargo xtask lock` pins them from upstream's published checksum files
//! without downloading the binaries; `cargo xtask prefetch URL (--sha256 HEX | --file PATH)`
//! pins one by hand where upstream cannot be reached.

use crate::lockfile::{LockedUrl, Lockfile};
use cairn_formats::Digest;
use cairn_project::{Arch, ClusterSpec, Distribution};
use cairn_steps::Error;
use std::collections::BTreeMap;

/// One binary the cluster's nodes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesInput {
    /// `kubernetes/<name>-<go arch>`, the lock's name for it.
    pub name: String,
    pub url: String,
    /// Where it goes in the node's root filesystem.
    pub path: String,
    /// Upstream's checksum file that lists it: `<url>.sha256` for kubeadm, kubelet and
    /// kubectl (dl.k8s.io), `sha256sum-<go arch>.txt` beside the binary for k3s.
    pub checksum_url: String,
    /// The file name the checksum file lists it under (`k3s-armhf`, `kubelet`).
    pub asset: String,
}

fn go_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Armv7 => "arm",
        Arch::Aarch64 => "arm64",
    }
}

/// The name of k3s's release asset for `arch`.
pub fn k3s_asset(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "k3s",
        Arch::Armv7 => "k3s-armhf",
        Arch::Aarch64 => "k3s-arm64",
    }
}

/// The binaries for `arch`, from the upstream release URLs (or `kubernetes.download_url`).
pub fn inputs(cluster: &ClusterSpec, arch: Arch) -> Vec<KubernetesInput> {
    let k = &cluster.kubernetes;
    let version = &k.version;
    let goarch = go_arch(arch);
    let template = |name: &str, asset: &str, default: String| -> String {
        match &k.download_url {
            Some(t) => t
                .replace("{version}", version)
                .replace("{go_arch}", goarch)
                .replace("{name}", name)
                .replace("{asset}", asset),
            None => default,
        }
    };
    match k.distribution {
        Distribution::Kubeadm => ["kubeadm", "kubelet", "kubectl"]
            .iter()
            .map(|name| {
                let url = template(
                    name,
                    name,
                    format!("https://dl.k8s.io/release/v{version}/bin/linux/{goarch}/{name}"),
                );
                KubernetesInput {
                    name: format!("kubernetes/{name}-{goarch}"),
                    checksum_url: format!("{url}.sha256"),
                    url,
                    path: format!("/usr/local/bin/{name}"),
                    asset: name.to_string(),
                }
            })
            .collect(),
        Distribution::K3s => {
            let asset = k3s_asset(arch);
            // GitHub's release paths write the version's `+` as %2B, as k3s's own install
            // script does.
            let url = template(
                "k3s",
                asset,
                format!(
                    "https://github.com/k3s-io/k3s/releases/download/v{}/{asset}",
                    version.replace('+', "%2B")
                ),
            );
            let dir = url.rsplit_once('/').map_or(url.as_str(), |(d, _)| d);
            vec![KubernetesInput {
                name: format!("kubernetes/k3s-{goarch}"),
                checksum_url: format!("{dir}/sha256sum-{goarch}.txt"),
                url,
                path: "/usr/local/bin/k3s".into(),
                asset: asset.to_string(),
            }]
        }
    }
}

/// The sha256 a checksum file gives for `asset`: a file of `<hex>  <name>` lines
/// (`sha256sum`'s format, as k3s publishes), or a lone `<hex>` (dl.k8s.io's `.sha256` files).
pub fn parse_checksums(text: &str, asset: &str) -> Option<Digest> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let all: Vec<&str> = lines.by_ref().collect();
    if let [only] = all.as_slice() {
        if !only.contains(char::is_whitespace) {
            return Digest::from_hex(&only.to_ascii_lowercase()).ok();
        }
    }
    all.iter().find_map(|line| {
        let (hex, name) = line.split_once(char::is_whitespace)?;
        let name = name.trim_start().trim_start_matches('*');
        let name = name.rsplit('/').next().unwrap_or(name);
        (name == asset)
            .then(|| Digest::from_hex(&hex.to_ascii_lowercase()).ok())
            .flatten()
    })
}

/// Pins `inputs` from upstream's checksum files, fetching each checksum file once and no
/// binary. The error names the checksum URL and what to do when it cannot be read.
pub fn pin_from_checksums(
    cluster: &ClusterSpec,
    inputs: &[KubernetesInput],
) -> Result<Vec<LockedUrl>, Error> {
    let mut files: BTreeMap<&str, String> = BTreeMap::new();
    let mut out = Vec::new();
    let version = &cluster.kubernetes.version;
    for input in inputs {
        if !files.contains_key(input.checksum_url.as_str()) {
            let bytes = crate::fetch::get_bytes(&input.checksum_url).map_err(|e| {
                Error::msg(format!(
                    "pinning {} for {} {version} from upstream's checksum file: {e}\n{} must be reachable to pin {} without downloading it; where it is not, pin the binary with `cargo xtask prefetch {} --sha256 HEX` (the hash upstream publishes) or `--file PATH` (a copy of the file)",
                    input.name,
                    cluster.kubernetes.distribution.as_str(),
                    input.checksum_url,
                    input.url,
                    input.url
                ))
            })?;
            files.insert(
                &input.checksum_url,
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
        let text = &files[input.checksum_url.as_str()];
        let digest = parse_checksums(text, &input.asset).ok_or_else(|| {
            Error::msg(format!(
                "{} lists no sha256 for {}: is Kubernetes {version} ({}) published for this arch? check `kubernetes.version` in {}",
                input.checksum_url,
                input.asset,
                cluster.kubernetes.distribution.as_str(),
                cluster.path.display()
            ))
        })?;
        out.push(LockedUrl {
            name: input.name.clone(),
            url: input.url.clone(),
            size: None,
            sha256: digest.hex(),
        });
    }
    Ok(out)
}

/// Every input of every arch the cluster's nodes use.
pub fn all_inputs(cluster: &ClusterSpec, arches: &[Arch]) -> Vec<KubernetesInput> {
    let mut out: Vec<KubernetesInput> = arches.iter().flat_map(|a| inputs(cluster, *a)).collect();
    out.sort_by(|a, b| a.url.cmp(&b.url));
    out.dedup();
    out
}

/// The pinned digest and size (when known) of each input, or one error naming every
/// unpinned input and the command that pins it.
pub fn pins(
    lock: &Lockfile,
    inputs: &[KubernetesInput],
) -> Result<Vec<(KubernetesInput, Digest, Option<u64>)>, Error> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for input in inputs {
        match lock.url.iter().find(|u| u.url == input.url) {
            Some(u) => {
                let digest = Digest::from_hex(&u.sha256)
                    .map_err(|e| Error::at(format!("inputs.lock: url {}", u.url), e))?;
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
            "\npin them with `cargo xtask lock`, which reads upstream's checksum files ({} ...); where upstream cannot be reached, pin each with `cargo xtask prefetch URL --sha256 HEX` or, with a copy of the file, `cargo xtask prefetch {} --file PATH`",
            missing[0].checksum_url, missing[0].url
        ));
        return Err(Error::msg(msg));
    }
    Ok(out)
}

/// Pins `url` to the file at `file`, to a sha256 the user read from upstream's checksum
/// file (`sha256`, nothing downloaded), or to the fetched body: content goes into the
/// download cache and the lock gets (or keeps) its `[[url]]` entry. A URL pinned before to
/// other content is refused.
pub fn prefetch(
    ctx: &cairn_steps::Context,
    url: &str,
    file: Option<&std::path::Path>,
    sha256: Option<&str>,
    name: Option<&str>,
) -> Result<LockedUrl, Error> {
    let cache = crate::fetch::Cache::new(&ctx.cache);
    let given = sha256
        .map(|h| {
            let hex = h.strip_prefix("sha256:").unwrap_or(h);
            Digest::from_hex(&hex.to_ascii_lowercase()).map_err(|e| {
                Error::at(format!("--sha256 {h:?} is not a sha256 (64 hex digits, as upstream's checksum files give it)"), e)
            })
        })
        .transpose()?;
    let (digest, size) = match (file, given) {
        (Some(path), _) => {
            let (digest, size) = cache.add_file(path)?;
            (digest, Some(size))
        }
        (None, Some(digest)) => (digest, None),
        (None, None) => {
            let (digest, size) = cache.fetch_unpinned(url, url)?;
            (digest, Some(size))
        }
    };
    if let (Some(path), Some(want)) = (file, given) {
        if want != digest {
            return Err(Error::msg(format!(
                "{} is {digest}, not the --sha256 {want} given: it is not the file upstream published",
                path.display()
            )));
        }
    }
    let lock_path = ctx.lock_path();
    let mut lock = Lockfile::read(&lock_path)?.unwrap_or_else(|| Lockfile {
        version: crate::lockfile::VERSION,
        ..Default::default()
    });
    if let Some(old) = lock.url.iter_mut().find(|u| u.url == url) {
        if old.sha256 != digest.hex() {
            return Err(Error::msg(format!(
                "{} pins {url} to sha256:{}, but {} is {digest}: refusing to change a pin (if upstream really changed the file, delete its [[url]] entry from inputs.lock first)",
                lock_path.display(),
                old.sha256,
                match (file, given) {
                    (Some(f), _) => f.display().to_string(),
                    (None, Some(_)) => "the --sha256 given".to_string(),
                    (None, None) => "the fetched file".to_string(),
                },
            )));
        }
        if old.size.is_some() || size.is_none() {
            return Ok(old.clone());
        }
        // The same pin, now with the size the file showed.
        old.size = size;
        let pinned = old.clone();
        crate::lock::write_lock(ctx, &lock)?;
        return Ok(pinned);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_checksum_file_forms() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        // dl.k8s.io: the hash alone.
        assert_eq!(
            parse_checksums(&format!("{a}\n"), "kubelet").map(|d| d.hex()),
            Some(a.clone())
        );
        // k3s: sha256sum lines, several assets.
        let file = format!("{a}  k3s-airgap-images-arm64.tar\n{b}  k3s-arm64\n");
        assert_eq!(
            parse_checksums(&file, "k3s-arm64").map(|d| d.hex()),
            Some(b.to_ascii_lowercase())
        );
        assert_eq!(parse_checksums(&file, "k3s-armhf"), None);
        assert_eq!(
            parse_checksums(&format!("{b} *bin/k3s-arm64\n"), "k3s-arm64").map(|d| d.hex()),
            Some(b.to_ascii_lowercase())
        );
        assert_eq!(parse_checksums("<html>not found</html>", "k3s"), None);
    }
}
