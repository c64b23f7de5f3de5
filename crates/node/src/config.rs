//! A node's own configuration, rendered from `cluster.toml` and the node's file: the small
//! overlay that makes the shared base OS into this node (hostname, network, SSH, NTP,
//! containerd, kernel settings, the Kubernetes configuration for its role), and the node id.
//!
//! Secrets are never rendered: the Kubernetes configuration points at a secrets file that
//! is placed at flash or PXE time, and the node reports clearly on its console when the
//! file is absent.

use cairn_formats::Digest;
use cairn_project::{BootMethod, ClusterSpec, Distribution, NodeSpec, Role};
use cairn_steps::Error;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Where the running node looks for its secrets on an SD card (the boot partition).
pub const SD_SECRETS_PATH: &str = "/boot/firmware/cairn-secrets.env";
/// The kernel argument that names the secrets URL of a PXE node.
pub const PXE_SECRETS_ARG: &str = "cairn.secrets";

/// One entry of the overlay, with its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayEntry {
    Dir(u32),
    File(Vec<u8>, u32),
    Symlink(String),
}

/// Paths (relative, no leading `/`) to entries, parents explicit.
pub type Overlay = BTreeMap<String, OverlayEntry>;

/// The node's canonical, fully-resolved definition: the node's spec, the cluster's spec and
/// the content of every file they name. Its digest is the node id.
pub fn canonical_definition(
    cluster: &ClusterSpec,
    node: &NodeSpec,
    cluster_ca: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    let mut cluster_json =
        serde_json::to_value(cluster).map_err(|e| Error::at("serializing the cluster spec", e))?;
    if let Some(ca) = cluster_ca {
        cluster_json["registry"]["ca_file"] = Digest::of(ca).to_string().into();
    }
    let node_json = serde_json::to_value(node)
        .map_err(|e| Error::at(format!("serializing node {}", node.name), e))?;
    let doc = serde_json::json!({
        "cairn_node": 1,
        "name": node.name,
        "node": node_json,
        "cluster": cluster_json,
    });
    Ok(cairn_formats::json::to_canonical_vec(&doc).expect("json values serialize"))
}

/// The node id: the sha256 of the canonical definition. Stable identifiers of the node (the
/// disk identifier, the FAT volume id) derive from it; it does not change when the base OS
/// is rebuilt from newer packages, only when the node's or the cluster's definition does.
pub fn node_id(
    cluster: &ClusterSpec,
    node: &NodeSpec,
    cluster_ca: Option<&[u8]>,
) -> Result<Digest, Error> {
    Ok(Digest::of(&canonical_definition(
        cluster, node, cluster_ca,
    )?))
}

/// Reads the cluster CA named by `registry.ca_file` (relative to `nodes/`), if any.
pub fn read_cluster_ca(cluster: &ClusterSpec) -> Result<Option<Vec<u8>>, Error> {
    let Some(rel) = &cluster.registry.ca_file else {
        return Ok(None);
    };
    let dir = cluster
        .path
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."));
    let path = dir.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::at(
            format!(
                "{}: registry.ca_file {}",
                cluster.path.display(),
                path.display()
            ),
            e,
        )
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::msg(format!(
            "{}: registry.ca_file {} is not a PEM certificate",
            cluster.path.display(),
            path.display()
        )));
    }
    Ok(Some(bytes))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "control-plane",
        Role::Worker => "worker",
    }
}

pub(crate) struct OverlayBuilder(pub(crate) Overlay);

impl OverlayBuilder {
    pub(crate) fn dir(&mut self, path: &str, mode: u32) {
        self.0.insert(path.to_string(), OverlayEntry::Dir(mode));
    }
    pub(crate) fn parents(&mut self, path: &str) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            self.0
                .entry(parent.to_string())
                .or_insert(OverlayEntry::Dir(0o755));
            p = parent;
        }
    }
    pub(crate) fn file(&mut self, path: &str, text: impl Into<Vec<u8>>, mode: u32) {
        self.parents(path);
        self.0
            .insert(path.to_string(), OverlayEntry::File(text.into(), mode));
    }
    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.0
            .insert(path.to_string(), OverlayEntry::Symlink(target.to_string()));
    }
    pub(crate) fn enable(&mut self, unit: &str, target: &str) {
        self.symlink(
            &format!("etc/systemd/system/{target}.wants/{unit}"),
            &format!("/etc/systemd/system/{unit}"),
        );
    }
}

/// Everything the node needs to know about where it boots from.
pub struct BootFacts {
    /// The partition holding the boot files (SD), e.g. `PARTUUID=1a2b3c4d-01`.
    pub boot_partition: Option<String>,
}

/// Renders the node's overlay.
pub fn render(
    cluster: &ClusterSpec,
    node: &NodeSpec,
    node_id: &Digest,
    cluster_ca: Option<&[u8]>,
    boot: &BootFacts,
) -> Overlay {
    let mut o = OverlayBuilder(BTreeMap::new());
    // Directories whose modes differ from 0755 in Debian: an overlay's directory hides the
    // mode of the one below it.
    o.dir("root", 0o700);
    o.dir("root/.ssh", 0o700);

    let fqdn = format!("{}.{}", node.hostname, cluster.domain);
    let role = role_name(node.role);
    o.file("etc/hostname", format!("{}\n", node.hostname), 0o644);
    let self_address = match node.network.address {
        Some(a) => a.address.to_string(),
        None => "127.0.1.1".to_string(),
    };
    o.file(
        "etc/hosts",
        format!(
            "127.0.0.1\tlocalhost\n{self_address}\t{fqdn} {}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
            node.hostname
        ),
        0o644,
    );

    // Network: systemd-networkd, one file for every wired interface.
    let mut network = String::from(
        "# Rendered by Cairn from the node's [network].\n[Match]\nType=ether\nKind=!*\n\n[Network]\n",
    );
    if node.network.dhcp {
        network.push_str("DHCP=yes\n");
    } else if let Some(a) = node.network.address {
        let _ = writeln!(network, "Address={a}");
        if let Some(gw) = node.network.gateway {
            let _ = writeln!(network, "Gateway={gw}");
        }
    }
    for dns in &cluster.network.dns {
        let _ = writeln!(network, "DNS={dns}");
    }
    let mut domains: Vec<String> = cluster
        .network
        .search
        .iter()
        .map(|s| s.to_string())
        .collect();
    if domains.is_empty() {
        domains.push(cluster.domain.to_string());
    }
    let _ = writeln!(network, "Domains={}", domains.join(" "));
    if node.network.dhcp {
        network.push_str("\n[DHCPv4]\nUseHostname=no\n");
    }
    o.file("etc/systemd/network/10-cairn.network", network, 0o644);
    o.symlink("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf");

    // Time.
    if !cluster.network.ntp.is_empty() {
        o.file(
            "etc/systemd/timesyncd.conf.d/cairn.conf",
            format!("[Time]\nNTP={}\n", cluster.network.ntp.join(" ")),
            0o644,
        );
    }

    // SSH: keys only, never passwords. Host keys are made on first boot.
    let mut keys = String::new();
    for k in cluster
        .ssh
        .authorized_keys
        .iter()
        .chain(&node.ssh.authorized_keys)
    {
        keys.push_str(k.trim());
        keys.push('\n');
    }
    o.file("root/.ssh/authorized_keys", keys, 0o600);
    o.file(
        "etc/ssh/sshd_config",
        include_str!("files/sshd_config"),
        0o644,
    );

    // The runtime's registry configuration: the cluster registry as mirror, its CA if given.
    // kubeadm nodes run Debian's containerd; k3s nodes its bundled one, configured by
    // registries.yaml.
    let registry = &cluster.registry;
    if let Some(ca) = cluster_ca {
        o.file(
            "usr/local/share/ca-certificates/cairn-cluster-ca.crt",
            ca,
            0o644,
        );
    }
    match cluster.kubernetes.distribution {
        Distribution::Kubeadm => {
            let ca_line = if let Some(ca) = cluster_ca {
                o.file("etc/containerd/certs.d/cluster-ca.crt", ca, 0o644);
                "ca = \"/etc/containerd/certs.d/cluster-ca.crt\"\n"
            } else {
                ""
            };
            o.file(
                "etc/containerd/config.toml",
                include_str!("files/containerd-config.toml"),
                0o644,
            );
            o.file(
                &format!("etc/containerd/certs.d/{}/hosts.toml", registry.host),
                format!(
                    "server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  {ca_line}",
                    host = registry.host
                ),
                0o644,
            );
            // Every other registry is pulled through the cluster registry's proxy project
            // first (Harbor's proxy cache serves `/v2/<project>/...`), then from upstream.
            o.file(
                "etc/containerd/certs.d/_default/hosts.toml",
                format!(
                    "[host.\"https://{host}/v2/{project}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n  {ca_line}",
                    host = registry.host,
                    project = registry.project
                ),
                0o644,
            );
        }
        Distribution::K3s => {
            let ca_file = cluster_ca.map(|ca| {
                o.file("etc/rancher/k3s/cluster-ca.crt", ca, 0o644);
                "/etc/rancher/k3s/cluster-ca.crt"
            });
            o.file(
                "etc/rancher/k3s/registries.yaml",
                crate::kubernetes::k3s_registries(cluster, ca_file),
                0o644,
            );
        }
    }

    // Kernel modules and sysctls Kubernetes needs.
    o.file(
        "etc/modules-load.d/kubernetes.conf",
        "overlay\nbr_netfilter\n",
        0o644,
    );
    o.file(
        "etc/sysctl.d/90-kubernetes.conf",
        "net.ipv4.ip_forward = 1\nnet.ipv6.conf.all.forwarding = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n",
        0o644,
    );

    // Where the secrets are: the boot partition (SD) or a URL on the kernel command line (PXE).
    let secrets_source = match node.boot {
        BootMethod::Sd => "cairn-secrets.env on the boot partition".to_string(),
        BootMethod::Pxe => format!("{PXE_SECRETS_ARG}= on the kernel command line"),
    };
    if let Some(part) = &boot.boot_partition {
        o.file(
            "etc/fstab",
            format!("# Rendered by Cairn.\n{part}\t/boot/firmware\tvfat\tro,nofail,x-systemd.device-timeout=90s,umask=0077\t0\t2\n"),
            0o644,
        );
    }

    // Facts about the node, for the node's own scripts.
    let address = node
        .network
        .address
        .map_or_else(|| "dhcp".to_string(), |a| a.to_string());
    o.file(
        "etc/cairn/node.env",
        format!(
            "CAIRN_NODE={}\nCAIRN_NODE_ID={}\nCAIRN_HOSTNAME={}\nCAIRN_ROLE={role}\nCAIRN_ADDRESS={address}\nCAIRN_BOOT={}\nCAIRN_DISTRIBUTION={}\nCAIRN_SECRETS={}\n",
            node.name,
            node_id.hex(),
            node.hostname,
            match node.boot {
                BootMethod::Sd => "sd",
                BootMethod::Pxe => "pxe",
            },
            match cluster.kubernetes.distribution {
                Distribution::Kubeadm => "kubeadm",
                Distribution::K3s => "k3s",
            },
            match node.boot {
                BootMethod::Sd => SD_SECRETS_PATH,
                BootMethod::Pxe => "",
            },
        ),
        0o644,
    );
    crate::kubernetes::render(&mut o, cluster, node);

    // Cairn's own units: say where the secrets came from (the initramfs placed them) or why
    // they are absent, join the cluster with them, then report the node on the console.
    // report the node on the console.
    o.file("usr/lib/cairn/secrets", SECRETS_SCRIPT, 0o755);
    o.file("usr/lib/cairn/report", REPORT_SCRIPT, 0o755);
    o.file("usr/lib/cairn/kubernetes-up", KUBERNETES_UP_SCRIPT, 0o755);
    o.file(
        "etc/systemd/system/cairn-secrets.service",
        include_str!("files/cairn-secrets.service.in").replace("@SECRETS_SOURCE@", &secrets_source),
        0o644,
    );
    o.file(
        "etc/systemd/system/cairn-kubernetes.service",
        include_str!("files/cairn-kubernetes.service"),
        0o644,
    );
    o.file(
        "etc/systemd/system/cairn-report.service",
        include_str!("files/cairn-report.service"),
        0o644,
    );
    for unit in [
        "cairn-secrets.service",
        "cairn-kubernetes.service",
        "cairn-report.service",
    ] {
        o.enable(unit, "multi-user.target");
    }
    o.0
}

/// Says where the secrets the initramfs placed in /run/cairn came from, or clearly why
/// they are absent.
pub const SECRETS_SCRIPT: &str = include_str!("files/secrets.sh");
/// Prints what the running system is (hostname, addresses, role), then powers off when
/// the kernel command line asks for it (boot tests).
pub const REPORT_SCRIPT: &str = include_str!("files/report.sh");
/// Joins (or initialises) the cluster with the rendered configuration and the secrets.
pub const KUBERNETES_UP_SCRIPT: &str = include_str!("files/kubernetes-up.sh");

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CLUSTER: &str = "name = \"lab\"\ndomain = \"lab.lan\"\n[kubernetes]\ndistribution = \"k3s\"\nversion = \"1.32.7+k3s1\"\ncontrol_plane_endpoint = \"10.0.0.10:6443\"\npod_cidr = \"10.42.0.0/16\"\nservice_cidr = \"10.43.0.0/16\"\ncni = \"flannel\"\n[registry]\nhost = \"registry.lab.lan:5000\"\nproject = \"lab\"\n";
    const NODE: &str = "hostname = \"w1\"\narch = \"aarch64\"\nboard = \"rpi4\"\nboot = \"sd\"\nrole = \"worker\"\nimage = \"node-os\"\nlabels = { \"lab/zone\" = \"a\" }\ntaints = [\"lab/gpu=true:NoSchedule\"]\n[network]\naddress = \"10.0.0.21/24\"\n";

    fn text(o: &Overlay, path: &str) -> String {
        match &o[path] {
            OverlayEntry::File(b, _) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{path} is {other:?}"),
        }
    }

    #[test]
    fn k3s_nodes_get_a_config_yaml_with_labels_taints_and_no_token() {
        let cluster = ClusterSpec::parse(Path::new("nodes/cluster.toml"), CLUSTER).unwrap();
        let node = NodeSpec::parse(Path::new("nodes/w1.toml"), NODE).unwrap();
        let id = node_id(&cluster, &node, None).unwrap();
        let o = render(
            &cluster,
            &node,
            &id,
            None,
            &BootFacts {
                boot_partition: None,
            },
        );
        assert_eq!(
            text(&o, "etc/rancher/k3s/config.yaml"),
            "# Rendered by Cairn. The token is not here: it is read from token-file, written\n# from the secrets file at boot.\n\
             node-name: \"w1\"\ntoken-file: /run/cairn/k3s-token\nserver: \"https://10.0.0.10:6443\"\n\
             node-ip: \"10.0.0.21\"\nnode-label:\n  - \"lab/zone=a\"\nnode-taint:\n  - \"lab/gpu=true:NoSchedule\"\n"
        );
        assert!(!o.contains_key("etc/cairn/kubeadm.yaml"));
        assert!(text(&o, "etc/cairn/node.env").contains("CAIRN_DISTRIBUTION=k3s\n"));
        // k3s's bundled containerd reads registries.yaml; no Debian containerd config.
        assert!(!o.keys().any(|k| k.starts_with("etc/containerd")));
        assert_eq!(
            text(&o, "etc/rancher/k3s/registries.yaml"),
            "# Rendered by Cairn.\nmirrors:\n  \"registry.lab.lan:5000\":\n    endpoint:\n      - \"https://registry.lab.lan:5000\"\n  \"*\":\n    endpoint:\n      - \"https://registry.lab.lan:5000\"\n    rewrite:\n      \"^(.*)$\": \"lab/$1\"\n"
        );
        assert_eq!(o["root/.ssh"], OverlayEntry::Dir(0o700));
        assert!(!o.contains_key("etc/fstab"), "no boot partition given");

        // A server with the cluster's own CNI and CA: no flannel, the CA trusted.
        let cilium = ClusterSpec::parse(
            Path::new("nodes/cluster.toml"),
            &CLUSTER.replace("\"flannel\"", "\"cilium\""),
        )
        .unwrap();
        let server = NodeSpec::parse(
            Path::new("nodes/s1.toml"),
            &NODE
                .replace("\"w1\"", "\"s1\"")
                .replace("\"worker\"", "\"control-plane\""),
        )
        .unwrap();
        let o = render(
            &cilium,
            &server,
            &id,
            Some(b"-----BEGIN CERTIFICATE-----\n"),
            &BootFacts {
                boot_partition: None,
            },
        );
        let config = text(&o, "etc/rancher/k3s/config.yaml");
        assert!(!config.contains("server:"), "{config}");
        assert!(config.contains("cluster-cidr: \"10.42.0.0/16\"\nservice-cidr: \"10.43.0.0/16\"\ntls-san:\n  - \"10.0.0.10\"\nwrite-kubeconfig-mode: \"0600\"\nflannel-backend: \"none\"\ndisable-network-policy: true\n"), "{config}");
        assert!(text(&o, "etc/rancher/k3s/registries.yaml").ends_with("configs:\n  \"registry.lab.lan:5000\":\n    tls:\n      ca_file: \"/etc/rancher/k3s/cluster-ca.crt\"\n"));
        assert_eq!(
            text(&o, "etc/rancher/k3s/cluster-ca.crt"),
            "-----BEGIN CERTIFICATE-----\n"
        );
    }

    #[test]
    fn the_node_id_follows_the_definition() {
        let cluster = ClusterSpec::parse(Path::new("nodes/cluster.toml"), CLUSTER).unwrap();
        let node = NodeSpec::parse(Path::new("nodes/w1.toml"), NODE).unwrap();
        let id = node_id(&cluster, &node, None).unwrap();
        assert_eq!(id, node_id(&cluster, &node, None).unwrap());
        let moved = NodeSpec::parse(
            Path::new("nodes/w1.toml"),
            &NODE.replace("10.0.0.21/24", "10.0.0.22/24"),
        )
        .unwrap();
        assert_ne!(id, node_id(&cluster, &moved, None).unwrap());
        assert_ne!(id, node_id(&cluster, &node, Some(b"ca")).unwrap());
        // Comments and key order are not part of the definition.
        let reordered = NodeSpec::parse(
            Path::new("nodes/w1.toml"),
            &format!(
                "# a comment\nrole = \"worker\"\n{}",
                NODE.replace("role = \"worker\"\n", "")
            ),
        )
        .unwrap();
        assert_eq!(id, node_id(&cluster, &reordered, None).unwrap());
    }

    #[test]
    fn scripts_have_no_tabs_or_cr() {
        for s in [SECRETS_SCRIPT, REPORT_SCRIPT, KUBERNETES_UP_SCRIPT] {
            assert!(s.starts_with("#!/bin/sh\n"));
            assert!(!s.contains('\r'));
        }
    }
}
