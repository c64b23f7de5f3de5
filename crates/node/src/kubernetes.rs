//! The Kubernetes distribution on a node: the units that run its binaries (in the base OS,
//! shared by the cluster's nodes of one arch) and the node's configuration for its role,
//! rendered with placeholders where the secrets go.

use crate::config::OverlayBuilder;
use cairn_project::{ClusterSpec, Distribution, NodeSpec, Role};
use std::fmt::Write as _;

/// The units that run the distribution's binaries.
pub fn units(cluster: &ClusterSpec) -> Vec<(&'static str, &'static str)> {
    match cluster.kubernetes.distribution {
        Distribution::Kubeadm => vec![
            ("/usr/lib/systemd/system/kubelet.service", KUBELET_UNIT),
            (
                "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
                KUBELET_KUBEADM_DROPIN,
            ),
        ],
        Distribution::K3s => vec![("/usr/lib/systemd/system/k3s.service", K3S_UNIT)],
    }
}

/// Links to the binary, for a node's users: k3s answers to the name it is called by, as its
/// own install script sets it up.
pub fn symlinks(cluster: &ClusterSpec) -> Vec<(String, String)> {
    match cluster.kubernetes.distribution {
        Distribution::Kubeadm => Vec::new(),
        Distribution::K3s => ["kubectl", "crictl", "ctr"]
            .iter()
            .map(|n| (format!("/usr/local/bin/{n}"), "k3s".to_string()))
            .collect(),
    }
}

const KUBELET_UNIT: &str = include_str!("files/kubelet.service");

const KUBELET_KUBEADM_DROPIN: &str = include_str!("files/10-kubeadm.conf");

const K3S_UNIT: &str = include_str!("files/k3s.service");

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// The distribution's configuration for the node's role (kubeadm Init/Cluster or Join
/// configuration, or k3s's `config.yaml`), with placeholders for the token.
pub(crate) fn render(o: &mut OverlayBuilder, cluster: &ClusterSpec, node: &NodeSpec) {
    let k = &cluster.kubernetes;
    let name = node.hostname.to_string();
    let labels: Vec<String> = node
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    match k.distribution {
        Distribution::Kubeadm => {
            let mut y = String::from(
                "# Rendered by Cairn. The bootstrap token and certificate key are not here: they\n\
                 # come from the secrets file at boot (see /usr/lib/cairn/kubernetes-up).\n",
            );
            let mut registration = format!("nodeRegistration:\n  name: {}\n", yaml_str(&name));
            registration.push_str("  criSocket: unix:///run/containerd/containerd.sock\n");
            if !labels.is_empty() {
                let _ = writeln!(
                    registration,
                    "  kubeletExtraArgs:\n    - name: node-labels\n      value: {}",
                    yaml_str(&labels.join(","))
                );
            }
            registration.push_str("  taints:\n");
            if node.taints.is_empty() {
                registration.push_str("    []\n");
            }
            for t in &node.taints {
                let (kv, effect) = t.rsplit_once(':').unwrap_or((t, "NoSchedule"));
                let (key, value) = kv.split_once('=').map_or((kv, None), |(a, b)| (a, Some(b)));
                let _ = writeln!(registration, "    - key: {}", yaml_str(key));
                if let Some(v) = value {
                    let _ = writeln!(registration, "      value: {}", yaml_str(v));
                }
                let _ = writeln!(registration, "      effect: {effect}");
            }
            let address = node.network.address.map(|a| a.address.to_string());
            match node.role {
                Role::ControlPlane => {
                    y.push_str("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n");
                    y.push_str("bootstrapTokens:\n  - token: \"@CAIRN_JOIN_TOKEN@\"\n");
                    if let Some(a) = &address {
                        let _ = writeln!(
                            y,
                            "localAPIEndpoint:\n  advertiseAddress: {}\n  bindPort: 6443",
                            yaml_str(a)
                        );
                    }
                    y.push_str(&registration);
                    let _ = write!(
                        y,
                        "---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n\
                         clusterName: {}\nkubernetesVersion: {}\ncontrolPlaneEndpoint: {}\n\
                         imageRepository: {}\nnetworking:\n  podSubnet: {}\n  serviceSubnet: {}\n  dnsDomain: cluster.local\n",
                        yaml_str(cluster.name.as_str()),
                        yaml_str(&format!("v{}", k.version)),
                        yaml_str(&k.control_plane_endpoint),
                        yaml_str(&format!(
                            "{}/{}",
                            cluster.registry.host, cluster.registry.project
                        )),
                        yaml_str(&k.pod_cidr.to_string()),
                        yaml_str(&k.service_cidr.to_string()),
                    );
                }
                Role::Worker => {
                    let _ = write!(
                        y,
                        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n\
                         discovery:\n  bootstrapToken:\n    apiServerEndpoint: {}\n    token: \"@CAIRN_JOIN_TOKEN@\"\n    caCertHashes:\n      - \"@CAIRN_CA_CERT_HASH@\"\n",
                        yaml_str(&k.control_plane_endpoint)
                    );
                    y.push_str(&registration);
                }
            }
            y.push_str(
                "---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n",
            );
            o.file("etc/cairn/kubeadm.yaml", y, 0o644);
        }
        Distribution::K3s => {
            let mut y = String::from(
                "# Rendered by Cairn. The token is not here: it is read from token-file, written\n# from the secrets file at boot.\n",
            );
            let _ = writeln!(y, "node-name: {}", yaml_str(&name));
            y.push_str("token-file: /run/cairn/k3s-token\n");
            match node.role {
                // Agents join through the API endpoint; the (single) server is the cluster.
                Role::Worker => {
                    let _ = writeln!(
                        y,
                        "server: {}",
                        yaml_str(&format!("https://{}", k.control_plane_endpoint))
                    );
                }
                Role::ControlPlane => {
                    let host = endpoint_host(&k.control_plane_endpoint);
                    let _ = writeln!(
                        y,
                        "cluster-cidr: {}\nservice-cidr: {}\ntls-san:\n  - {}\nwrite-kubeconfig-mode: \"0600\"",
                        yaml_str(&k.pod_cidr.to_string()),
                        yaml_str(&k.service_cidr.to_string()),
                        yaml_str(host),
                    );
                    if k.cni != "flannel" {
                        // The cluster brings its own CNI: k3s runs none.
                        y.push_str("flannel-backend: \"none\"\ndisable-network-policy: true\n");
                    }
                }
            }
            if let Some(a) = node.network.address {
                let _ = writeln!(y, "node-ip: {}", yaml_str(&a.address.to_string()));
            }
            if !labels.is_empty() {
                y.push_str("node-label:\n");
                for l in &labels {
                    let _ = writeln!(y, "  - {}", yaml_str(l));
                }
            }
            if !node.taints.is_empty() {
                y.push_str("node-taint:\n");
                for t in &node.taints {
                    let _ = writeln!(y, "  - {}", yaml_str(t));
                }
            }
            o.file("etc/rancher/k3s/config.yaml", y, 0o644);
        }
    }
}

/// The host of a `host:port` endpoint (an IPv6 literal without its brackets).
fn endpoint_host(endpoint: &str) -> &str {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// k3s's `registries.yaml`: its bundled containerd pulls the cluster's own images from the
/// cluster registry, and every other registry through the registry's proxy project (Harbor's
/// proxy cache serves `<project>/<upstream path>`), then from upstream.
pub(crate) fn k3s_registries(cluster: &ClusterSpec, ca_file: Option<&str>) -> String {
    let r = &cluster.registry;
    let host = yaml_str(&r.host);
    let endpoint = yaml_str(&format!("https://{}", r.host));
    let mut y = format!(
        "# Rendered by Cairn.\nmirrors:\n  {host}:\n    endpoint:\n      - {endpoint}\n  \"*\":\n    endpoint:\n      - {endpoint}\n    rewrite:\n      \"^(.*)$\": {}\n",
        yaml_str(&format!("{}/$1", r.project))
    );
    if let Some(ca) = ca_file {
        let _ = write!(
            y,
            "configs:\n  {host}:\n    tls:\n      ca_file: {}\n",
            yaml_str(ca)
        );
    }
    y
}
