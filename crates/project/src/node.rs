//! `nodes/cluster.toml` and `nodes/<node>.toml`.

use crate::values::{Arch, Cidr, Hostname, MacAddress, Name};
use crate::{ImageKind, ImageSpec, SpecError, stem};
use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Kubeadm,
    K3s,
}

impl Distribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::Kubeadm => "kubeadm",
            Distribution::K3s => "k3s",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    pub distribution: Distribution,
    /// e.g. "1.31.2"
    pub version: String,
    /// `host:port` of the API server (a load-balanced address for HA control planes).
    pub control_plane_endpoint: String,
    pub pod_cidr: Cidr,
    pub service_cidr: Cidr,
    pub cni: String,
    /// Where the distribution's binaries come from, when not the upstream release URLs:
    /// a template with `{version}`, `{go_arch}` and `{name}` (kubeadm, kubelet, kubectl, k3s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
}

/// The first Kubernetes minor release without `linux/arm` kubelet and kubeadm binaries
/// (kubernetes PR 115742; only kubectl is still built for it).
pub const KUBEADM_LAST_ARM_MINOR: u32 = 26;

impl KubernetesSpec {
    /// `(major, minor, patch)` of `version`, checked against the distribution's form:
    /// `1.32.7` for kubeadm, `1.32.7+k3s1` for k3s.
    pub fn parse_version(&self) -> Result<(u32, u32, u32), String> {
        let v = &self.version;
        let (core, suffix) = match v.split_once('+') {
            Some((c, s)) => (c, Some(s)),
            None => (v.as_str(), None),
        };
        let example = match self.distribution {
            Distribution::Kubeadm => "\"1.32.7\" (no leading v)",
            Distribution::K3s => "\"1.32.7+k3s1\" (no leading v)",
        };
        let bad = || {
            format!(
                "version {v:?} is not a {} release: write it like {example}",
                self.distribution.as_str()
            )
        };
        let parts: Vec<u32> = core
            .split('.')
            .map(|p| {
                (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| p.parse().ok())
                    .flatten()
            })
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(bad)?;
        let [major, minor, patch] = parts[..] else {
            return Err(bad());
        };
        let suffix_ok = match (self.distribution, suffix) {
            (Distribution::Kubeadm, None) => true,
            (Distribution::K3s, Some(s)) => s
                .strip_prefix("k3s")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            _ => false,
        };
        if !suffix_ok {
            return Err(bad());
        }
        Ok((major, minor, patch))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    /// Registry host (and port), e.g. `harbor.homelab.lan`.
    pub host: String,
    /// Harbor project that holds the cluster's images.
    pub project: String,
    /// Cluster CA certificate (PEM), relative to `nodes/`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNetwork {
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    #[serde(default)]
    pub ntp: Vec<String>,
    #[serde(default)]
    pub search: Vec<Hostname>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

/// `nodes/cluster.toml`: what every node of the cluster shares.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: Name,
    pub domain: Hostname,
    pub kubernetes: KubernetesSpec,
    pub registry: RegistrySpec,
    #[serde(default)]
    pub network: ClusterNetwork,
    #[serde(default)]
    pub ssh: SshSpec,
    #[serde(skip)]
    pub path: PathBuf,
}

impl ClusterSpec {
    pub fn load(path: &Path) -> Result<ClusterSpec, SpecError> {
        let source = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
        ClusterSpec::parse(path, &source)
    }

    pub fn parse(path: &Path, source: &str) -> Result<ClusterSpec, SpecError> {
        let mut spec: ClusterSpec =
            toml::from_str(source).map_err(|e| SpecError::from_toml(path, source, &e))?;
        spec.path = path.to_path_buf();
        let err =
            |needle: &str, msg: String| SpecError::at(path, source, find_key(source, needle), msg);
        let k = &spec.kubernetes;
        for (key, cidr) in [("pod_cidr", k.pod_cidr), ("service_cidr", k.service_cidr)] {
            if !cidr.is_network() {
                return Err(err(
                    key,
                    format!("{cidr} has host bits set: write the network address"),
                ));
            }
        }
        if k.pod_cidr.contains(k.service_cidr.address)
            || k.service_cidr.contains(k.pod_cidr.address)
        {
            return Err(err(
                "service_cidr",
                format!(
                    "service CIDR {} overlaps pod CIDR {}",
                    k.service_cidr, k.pod_cidr
                ),
            ));
        }
        if let Err(msg) = k.parse_version() {
            return Err(err("version", msg));
        }
        if !valid_endpoint(&k.control_plane_endpoint) {
            return Err(err(
                "control_plane_endpoint",
                format!(
                    "invalid endpoint {:?}, expected host:port like 10.0.10.10:6443",
                    k.control_plane_endpoint
                ),
            ));
        }
        check_ssh_keys(&spec.ssh).map_err(|m| err("authorized_keys", m))?;
        Ok(spec)
    }
}

fn check_ssh_keys(ssh: &SshSpec) -> Result<(), String> {
    for key in &ssh.authorized_keys {
        let kind = key.split_whitespace().next().unwrap_or("");
        if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            || key.split_whitespace().count() < 2
        {
            return Err(format!(
                "{key:?} is not an SSH public key (expected `ssh-ed25519 AAAA... comment`)"
            ));
        }
    }
    Ok(())
}

fn valid_endpoint(endpoint: &str) -> bool {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return false;
    };
    let host_ok = host.parse::<IpAddr>().is_ok()
        || host.parse::<Hostname>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<IpAddr>().is_ok());
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The byte span of `key =` inside the `n`th (0-based) `[[table]]` block, else of the
/// first `key =` anywhere.
pub(crate) fn find_table_key(
    source: &str,
    table: &str,
    n: usize,
    key: &str,
) -> Option<std::ops::Range<usize>> {
    let header = format!("[[{table}]]");
    let mut seen = 0usize;
    let mut inside = false;
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            inside = trimmed == header && {
                seen += 1;
                seen == n + 1
            };
        } else if inside {
            let lead = line.len() - line.trim_start().len();
            if let Some(rest) = line.trim_start().strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(offset + lead..offset + lead + key.len());
                }
            }
        }
        offset += line.len();
    }
    find_key(source, key)
}

/// The byte span of the first `key =` line in `source`.
pub(crate) fn find_key(source: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                let start = offset + (line.len() - trimmed.len());
                return Some(start..start + key.len());
            }
        }
        offset += line.len();
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMethod {
    Sd,
    Pxe,
}

/// A board a node runs on; what each one is lives in `board.rs` ([`Board::info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Board {
    /// Raspberry Pi 4 (and 400, CM4).
    Rpi4,
    /// Raspberry Pi 3.
    Rpi3,
    /// Raspberry Pi 2.
    Rpi2,
    /// A PC or server (x86_64).
    Pc,
}

impl Board {
    fn arches(self) -> &'static [Arch] {
        self.info().arches
    }

    fn boot(self) -> BootMethod {
        self.info().boot
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub dhcp: bool,
    /// Static address with prefix, e.g. `10.0.10.21/24`.
    #[serde(default)]
    pub address: Option<Cidr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// `nodes/<name>.toml`: one machine of the cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
    pub hostname: Hostname,
    pub arch: Arch,
    pub board: Board,
    pub boot: BootMethod,
    pub role: Role,
    /// The OS image (`images/<image>.toml`) this node runs.
    pub image: Spanned<String>,
    #[serde(default)]
    pub mac: Option<MacAddress>,
    /// SD nodes: MiB of the card kept for the root, from the root partition's start. The
    /// data partition starts right after, at the same place for every image of the node,
    /// so a re-flash with a grown root keeps the data. Default [`DEFAULT_ROOT_SLOT_MIB`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_slot_mib: Option<u64>,
    pub network: NetworkSpec,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<String>,
    /// Keys for this node only, added to the cluster's.
    #[serde(default)]
    pub ssh: SshSpec,
    #[serde(skip)]
    source: String,
}

/// The card space an SD node's root may grow into (2 GiB: several times a k3s node's root).
pub const DEFAULT_ROOT_SLOT_MIB: u64 = 2048;

impl NodeSpec {
    /// MiB of the card kept for the root (SD nodes).
    pub fn root_slot_mib(&self) -> u64 {
        self.root_slot_mib.unwrap_or(DEFAULT_ROOT_SLOT_MIB)
    }

    pub fn load(path: &Path) -> Result<NodeSpec, SpecError> {
        let source = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
        NodeSpec::parse(path, &source)
    }

    pub fn parse(path: &Path, source: &str) -> Result<NodeSpec, SpecError> {
        let name = stem(path);
        if let Err(msg) = name.parse::<Name>() {
            return Err(SpecError::at(
                path,
                source,
                None,
                format!("bad file name: {msg}"),
            ));
        }
        let mut node: NodeSpec =
            toml::from_str(source).map_err(|e| SpecError::from_toml(path, source, &e))?;
        node.name = name;
        node.path = path.to_path_buf();
        node.source = source.to_string();
        let err = |key: &str, msg: String| SpecError::at(path, source, find_key(source, key), msg);
        if !node.board.arches().contains(&node.arch) {
            let arches: Vec<&str> = node.board.arches().iter().map(|a| a.as_str()).collect();
            return Err(err(
                "arch",
                format!(
                    "board {} cannot run {}: use one of {}",
                    node.board,
                    node.arch,
                    arches.join(", ")
                ),
            ));
        }
        if node.board.boot() != node.boot {
            return Err(err(
                "boot",
                format!(
                    "board {:?} boots by {:?}, not {:?}",
                    node.board,
                    node.board.boot(),
                    node.boot
                ),
            ));
        }
        if node.boot == BootMethod::Pxe && node.mac.is_none() {
            return Err(SpecError::at(
                path,
                source,
                None,
                "key `mac` is missing: a PXE node is matched by its MAC address",
            ));
        }
        if let Some(slot) = node.root_slot_mib {
            if node.boot != BootMethod::Sd {
                return Err(err(
                    "root_slot_mib",
                    "root_slot_mib is the root's room on an SD card; a PXE node has no card: remove it".into(),
                ));
            }
            if !(64..=1 << 20).contains(&slot) {
                return Err(err(
                    "root_slot_mib",
                    format!(
                        "root_slot_mib = {slot}: give the root between 64 and 1048576 MiB (default {DEFAULT_ROOT_SLOT_MIB})"
                    ),
                ));
            }
        }
        let net = &node.network;
        match (net.dhcp, net.address) {
            (true, Some(_)) => {
                return Err(err(
                    "address",
                    "set either `dhcp = true` or a static `address`, not both".into(),
                ));
            }
            (false, None) => {
                return Err(err(
                    "network",
                    "set `dhcp = true` or a static `address` like 10.0.10.21/24".into(),
                ));
            }
            (false, Some(address)) => {
                if address.is_network() && address.prefix < 31 {
                    return Err(err(
                        "address",
                        format!("{address} is a network address, not a host address"),
                    ));
                }
                if let Some(gw) = net.gateway {
                    if gw == address.address {
                        return Err(err(
                            "gateway",
                            format!(
                                "gateway {gw} is the node's own address: the gateway is the router of {address}'s network"
                            ),
                        ));
                    }
                    if !address.contains(gw) {
                        return Err(err(
                            "gateway",
                            format!("gateway {gw} is outside the node's network {address}"),
                        ));
                    }
                }
            }
            (true, None) => {}
        }
        check_ssh_keys(&node.ssh).map_err(|m| err("authorized_keys", m))?;
        for taint in &node.taints {
            if !valid_taint(taint) {
                return Err(err(
                    "taints",
                    format!(
                        "invalid taint {taint:?}, expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute"
                    ),
                ));
            }
        }
        Ok(node)
    }

    /// Checks what the node needs of the cluster's Kubernetes distribution: upstream builds
    /// of it for the node's arch, and one container runtime in its image (k3s bundles its
    /// own containerd; kubeadm needs the image's).
    pub fn check_cluster(
        &self,
        cluster: &ClusterSpec,
        images: &[ImageSpec],
    ) -> Result<(), SpecError> {
        let k = &cluster.kubernetes;
        if k.distribution == Distribution::Kubeadm && self.arch == Arch::Armv7 {
            let (major, minor, _) = k.parse_version().unwrap_or((1, u32::MAX, 0));
            if major > 1 || minor > KUBEADM_LAST_ARM_MINOR {
                return Err(SpecError::at(
                    &self.path,
                    &self.source,
                    find_key(&self.source, "arch"),
                    format!(
                        "an armv7 node cannot run kubeadm {}: Kubernetes publishes no linux/arm kubelet or kubeadm since 1.27 (only kubectl). Use distribution = \"k3s\" in {} (k3s publishes k3s-armhf), or an aarch64 board (arch = \"aarch64\" on a Raspberry Pi 3 or 4)",
                        k.version,
                        cluster.path.display()
                    ),
                ));
            }
        }
        let Some(image) = images.iter().find(|i| &i.name == self.image.get_ref()) else {
            return Ok(());
        };
        let packages = image.packages_for(self.arch);
        let has_containerd = packages
            .iter()
            .any(|p| p == "containerd" || p == "containerd.io");
        let span = Some(self.image.span());
        match k.distribution {
            Distribution::K3s if has_containerd => Err(SpecError::at(
                &self.path,
                &self.source,
                span,
                format!(
                    "image {:?} installs containerd, but k3s runs its own bundled containerd and a node runs one runtime: remove containerd (and containerd.service) from {}, or give the node an image without it",
                    image.name,
                    image.path.display()
                ),
            )),
            Distribution::Kubeadm if !has_containerd => Err(SpecError::at(
                &self.path,
                &self.source,
                span,
                format!(
                    "image {:?} has no container runtime, and kubeadm's kubelet needs one: add \"containerd\" and \"runc\" to `packages` and \"containerd.service\" to `services` in {}",
                    image.name,
                    image.path.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Checks that no node loaded before this one has its hostname, MAC address or static
    /// address (a node file copied and only partly edited); the error names both files.
    pub fn check_unique(&self, earlier: &[NodeSpec]) -> Result<(), SpecError> {
        let ip = |n: &NodeSpec| n.network.address.map(|a| a.address);
        for other in earlier {
            let clash = if other
                .hostname
                .as_str()
                .eq_ignore_ascii_case(self.hostname.as_str())
            {
                Some(("hostname", format!("hostname {:?}", self.hostname.as_str())))
            } else if self.mac.is_some() && other.mac == self.mac {
                Some(("mac", format!("MAC address {}", self.mac.expect("checked"))))
            } else if ip(self).is_some() && ip(other) == ip(self) {
                Some(("address", format!("address {}", ip(self).expect("checked"))))
            } else {
                None
            };
            if let Some((key, what)) = clash {
                return Err(SpecError::at(
                    &self.path,
                    &self.source,
                    find_key(&self.source, key),
                    format!(
                        "{what} is also node {}'s ({}): every node needs its own; change `{key}` in one of them",
                        other.name,
                        other.path.display()
                    ),
                ));
            }
        }
        // A second server would bootstrap a second, separate cluster (its rendered config
        // joins nothing): refused until several control-plane nodes are supported.
        if self.role == Role::ControlPlane {
            if let Some(other) = earlier.iter().find(|o| o.role == Role::ControlPlane) {
                return Err(SpecError::at(
                    &self.path,
                    &self.source,
                    find_key(&self.source, "role"),
                    format!(
                        "a second control-plane node: {} ({}) is the cluster's control plane, and Cairn runs one per cluster for now (another would start a second, separate cluster); make this node `role = \"worker\"`",
                        other.name,
                        other.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that the node's image exists, is an OS image and is built for the node's arch.
    pub fn check_image(&self, images: &[ImageSpec]) -> Result<(), SpecError> {
        let span = Some(self.image.span());
        let err = |msg: String| SpecError::at(&self.path, &self.source, span.clone(), msg);
        let name = self.image.get_ref();
        let Some(image) = images.iter().find(|i| &i.name == name) else {
            let known: Vec<&str> = images
                .iter()
                .filter(|i| i.kind == ImageKind::Os)
                .map(|i| i.name.as_str())
                .collect();
            return Err(err(format!(
                "image {name:?} does not exist (no images/{name}.toml); OS images: {}",
                known.join(", ")
            )));
        };
        if image.kind != ImageKind::Os {
            return Err(err(format!(
                "image {name:?} is a container image; a node needs an OS image (kind = \"os\")"
            )));
        }
        if !image.arches.contains(&self.arch) {
            return Err(err(format!(
                "image {name:?} is not built for {}: add it to `arches` in {}",
                self.arch,
                image.path.display()
            )));
        }
        Ok(())
    }
}

fn valid_taint(taint: &str) -> bool {
    let Some((kv, effect)) = taint.rsplit_once(':') else {
        return false;
    };
    let key = kv.split_once('=').map_or(kv, |(k, _)| k);
    !key.is_empty() && matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
}
