use cairn_project::{Arch, Distribution, ImageKind, Project, Role};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn example_project_loads() {
    let project = Project::load(&repo_root()).expect("example specs are valid");
    let names: Vec<&str> = project.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["pi-control", "pi-legacy", "pi-worker", "x86-storage"]
    );
    let legacy = project.node("pi-legacy").unwrap();
    assert_eq!(legacy.arch, Arch::Armv7);
    assert!(legacy.network.dhcp);
    assert_eq!(project.node("pi-control").unwrap().role, Role::ControlPlane);
    let haproxy = project.image("haproxy").unwrap();
    assert_eq!(haproxy.kind, ImageKind::Container);
    assert_eq!(haproxy.arches, [Arch::X86_64, Arch::Armv7, Arch::Aarch64]);
    assert_eq!(
        haproxy.config.as_ref().unwrap().user.as_deref(),
        Some("haproxy")
    );
    assert_eq!(
        project.cluster.kubernetes.pod_cidr.to_string(),
        "10.42.0.0/16"
    );
    assert_eq!(project.cluster.kubernetes.distribution, Distribution::K3s);
    assert_eq!(project.cluster.kubernetes.parse_version(), Ok((1, 32, 7)));
    // The kubeadm example beside it loads too, with no armv7 node.
    let kubeadm = Project::load(&repo_root().join("examples/kubeadm")).expect("kubeadm example");
    assert_eq!(
        kubeadm.cluster.kubernetes.distribution,
        Distribution::Kubeadm
    );
    assert!(kubeadm.nodes.iter().all(|n| n.arch != Arch::Armv7));
    assert!(
        project
            .image("node-os")
            .unwrap()
            .packages_for(Arch::Aarch64)
            .contains(&"linux-image-arm64".to_string())
    );
}

/// A scratch project: the examples copied, with one file replaced.
fn project_with(file: &str, text: &str) -> (tempfile::TempDir, String) {
    project_with_files(&[(file, text)])
}

/// A scratch project: the examples copied, with files replaced (or added).
fn scratch_project(replaced: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["nodes", "images", "images/files"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(repo_root().join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    for (file, text) in replaced {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    dir
}

/// A scratch project with files replaced, and the error it loads with.
fn project_with_files(replaced: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = scratch_project(replaced);
    let err = Project::load(dir.path())
        .expect_err("the spec is invalid")
        .to_string();
    (dir, err)
}

const NODE: &str = r#"hostname = "pi-worker"
arch = "aarch64"
board = "rpi4"
boot = "sd"
role = "worker"
image = "node-os"

[network]
address = "10.0.10.21/24"
gateway = "10.0.10.1"
"#;

fn bad_node(find: &str, replace: &str) -> String {
    assert!(NODE.contains(find));
    project_with("nodes/pi-worker.toml", &NODE.replacen(find, replace, 1)).1
}

fn assert_names(err: &str, file: &str, line: usize, key: &str, what: &str) {
    assert!(
        err.contains(&format!("{file}:{line}:")),
        "no {file}:{line} in: {err}"
    );
    assert!(
        err.contains(&format!("key `{key}`")),
        "no key {key} in: {err}"
    );
    assert!(err.contains(what), "no {what:?} in: {err}");
}

#[test]
fn unknown_key() {
    let err = bad_node("role = \"worker\"", "role = \"worker\"\ncolour = \"blue\"");
    assert_names(
        &err,
        "pi-worker.toml",
        6,
        "colour",
        "unknown field `colour`",
    );
}

#[test]
fn unknown_key_in_a_table() {
    let err = bad_node("gateway =", "gatway =");
    assert_names(
        &err,
        "pi-worker.toml",
        10,
        "network.gatway",
        "unknown field `gatway`",
    );
}

#[test]
fn wrong_type() {
    let err = bad_node("arch = \"aarch64\"", "arch = 64");
    assert_names(&err, "pi-worker.toml", 2, "arch", "string");
}

#[test]
fn invalid_arch() {
    let err = bad_node("arch = \"aarch64\"", "arch = \"riscv64\"");
    assert_names(
        &err,
        "pi-worker.toml",
        2,
        "arch",
        "unknown arch \"riscv64\", expected one of x86_64, armv7, aarch64",
    );
}

#[test]
fn invalid_hostname() {
    let err = bad_node("hostname = \"pi-worker\"", "hostname = \"pi_worker\"");
    assert_names(&err, "pi-worker.toml", 1, "hostname", "RFC 1123");
}

#[test]
fn invalid_cidr() {
    let err = bad_node("10.0.10.21/24", "10.0.10.21/40");
    assert_names(
        &err,
        "pi-worker.toml",
        9,
        "network.address",
        "invalid CIDR \"10.0.10.21/40\"",
    );
}

#[test]
fn gateway_outside_network() {
    let err = bad_node("10.0.10.1\"", "192.168.7.1\"");
    assert_names(
        &err,
        "pi-worker.toml",
        10,
        "network.gateway",
        "outside the node's network",
    );
}

#[test]
fn missing_image() {
    let err = bad_node("image = \"node-os\"", "image = \"node-os2\"");
    assert_names(
        &err,
        "pi-worker.toml",
        6,
        "image",
        "image \"node-os2\" does not exist",
    );
}

#[test]
fn board_cannot_run_arch() {
    let err = bad_node("arch = \"aarch64\"", "arch = \"x86_64\"");
    assert_names(
        &err,
        "pi-worker.toml",
        2,
        "arch",
        "board rpi4 cannot run x86_64",
    );
}

#[test]
fn bad_cluster_cidr_and_image_arch() {
    let cluster = std::fs::read_to_string(repo_root().join("nodes/cluster.toml")).unwrap();
    let (_d, err) = project_with(
        "nodes/cluster.toml",
        &cluster.replace("10.43.0.0/16", "10.42.1.0/24"),
    );
    assert!(
        err.contains("cluster.toml:")
            && err.contains("key `kubernetes.service_cidr`")
            && err.contains("overlaps"),
        "{err}"
    );
    let (_d, err) = project_with(
        "nodes/cluster.toml",
        &cluster.replace("10.42.0.0/16", "10.42.0.0/x"),
    );
    assert!(
        err.contains("key `kubernetes.pod_cidr`") && err.contains("invalid CIDR"),
        "{err}"
    );

    let image = std::fs::read_to_string(repo_root().join("images/haproxy.toml")).unwrap();
    let (_d, err) = project_with(
        "images/haproxy.toml",
        &image.replace("\"armv7\", ", "\"armhf\", "),
    );
    assert!(
        err.contains("haproxy.toml:5:")
            && err.contains("key `arches`")
            && err.contains("Cairn calls it `armv7`"),
        "{err}"
    );
    let (_d, err) = project_with(
        "images/haproxy.toml",
        &image.replace("mode = \"0750\"", "mode = \"0785\""),
    );
    assert!(
        err.contains("key `dirs[].mode`") && err.contains("invalid mode"),
        "{err}"
    );
    let (_d, err) = project_with(
        "images/haproxy.toml",
        &image.replace("files/haproxy.cfg", "files/nope.cfg"),
    );
    assert!(
        err.contains("key `files[].source`") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn errors_in_array_tables_and_multi_line_arrays_point_at_the_right_line() {
    let image = std::fs::read_to_string(repo_root().join("images/node-os.toml")).unwrap();
    let (_d, err) = project_with(
        "images/node-os.toml",
        &image.replace("\"ethtool\", ", "7, "),
    );
    assert!(
        err.contains("node-os.toml:11:")
            && err.contains("key `packages`")
            && err.contains("invalid type: integer"),
        "{err}"
    );

    let haproxy = std::fs::read_to_string(repo_root().join("images/haproxy.toml")).unwrap();
    let two_files = format!(
        "{haproxy}\n[[files]]\npath = \"/etc/b\"\ncontent = \"x\"\nsource = \"files/haproxy.cfg\"\n"
    );
    let (_d, err) = project_with("images/haproxy.toml", &two_files);
    let line = two_files
        .lines()
        .position(|l| l == "path = \"/etc/b\"")
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("haproxy.toml:{line}:"))
            && err.contains("key `files[].path`")
            && err.contains("exactly one of"),
        "{err}"
    );

    let outside = haproxy.replace(
        "source = \"files/haproxy.cfg\"",
        "source = \"../../etc/passwd\"",
    );
    let (_d, err) = project_with("images/haproxy.toml", &outside);
    assert!(
        err.contains("key `files[].source`") && err.contains("must be a path inside"),
        "{err}"
    );
    let (_d, err) = project_with(
        "images/haproxy.toml",
        &haproxy.replace("user = \"haproxy\"", "user = \"nobody-here\""),
    );
    assert!(
        err.contains("key `config.user`") && err.contains("is not declared"),
        "{err}"
    );
    let (_d, err) = project_with(
        "images/haproxy.toml",
        &haproxy.replace("\"8404/tcp\"", "\"http\""),
    );
    assert!(
        err.contains("key `config.exposed_ports`") && err.contains("not a port"),
        "{err}"
    );
    let (_d, err) = project_with(
        "images/haproxy.toml",
        &haproxy.replace("suite = \"trixie\"", "suite = \"trixie/../x\""),
    );
    assert!(err.contains("key `suite`"), "{err}");
}

/// Kubernetes publishes no linux/arm kubelet or kubeadm since 1.27: an armv7 node in such a
/// kubeadm cluster is refused at its `arch`, saying why and what to do.
#[test]
fn armv7_nodes_need_k3s_or_an_older_kubeadm() {
    let cluster = std::fs::read_to_string(repo_root().join("nodes/cluster.toml")).unwrap();
    let image = std::fs::read_to_string(repo_root().join("images/node-os.toml")).unwrap();
    // kubeadm's node image carries containerd.
    let kubeadm_image = image
        .replace("\"udev\", ", "\"udev\", \"containerd\", \"runc\", ")
        .replace(
            "\"ssh.service\"]",
            "\"ssh.service\", \"containerd.service\"]",
        );
    let kubeadm = |version: &str| {
        cluster
            .replace("distribution = \"k3s\"", "distribution = \"kubeadm\"")
            .replace("1.32.7+k3s1", version)
    };
    let (_d, err) = project_with_files(&[
        ("nodes/cluster.toml", &kubeadm("1.32.7")),
        ("images/node-os.toml", &kubeadm_image),
    ]);
    assert_names(
        &err,
        "pi-legacy.toml",
        3,
        "arch",
        "an armv7 node cannot run kubeadm 1.32.7: Kubernetes publishes no linux/arm kubelet or kubeadm since 1.27",
    );
    assert!(
        err.contains("Use distribution = \"k3s\"") && err.contains("aarch64"),
        "{err}"
    );
    let (_d, err) = project_with_files(&[
        ("nodes/cluster.toml", &kubeadm("1.27.0")),
        ("images/node-os.toml", &kubeadm_image),
    ]);
    assert!(
        err.contains("pi-legacy.toml:3:") && err.contains("kubeadm 1.27.0"),
        "{err}"
    );
    // 1.26 still had linux/arm builds.
    let dir = tempfile::tempdir().unwrap();
    for sub in ["nodes", "images", "images/files"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(repo_root().join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    std::fs::write(dir.path().join("nodes/cluster.toml"), kubeadm("1.26.15")).unwrap();
    std::fs::write(dir.path().join("images/node-os.toml"), &kubeadm_image).unwrap();
    Project::load(dir.path()).expect("kubeadm 1.26 on armv7 loads");
}

/// One container runtime per node: k3s bundles containerd, kubeadm needs the image's.
#[test]
fn a_node_runs_exactly_one_container_runtime() {
    let image = std::fs::read_to_string(repo_root().join("images/node-os.toml")).unwrap();
    let (_d, err) = project_with(
        "images/node-os.toml",
        &image.replace("\"udev\", ", "\"udev\", \"containerd\", "),
    );
    assert!(
        err.contains("pi-control.toml:7:")
            && err.contains("key `image`")
            && err.contains(
                "image \"node-os\" installs containerd, but k3s runs its own bundled containerd"
            ),
        "{err}"
    );
    let cluster = std::fs::read_to_string(repo_root().join("nodes/cluster.toml")).unwrap();
    let no_armv7 = cluster
        .replace("distribution = \"k3s\"", "distribution = \"kubeadm\"")
        .replace("1.32.7+k3s1", "1.26.15");
    let (_d, err) = project_with("nodes/cluster.toml", &no_armv7);
    assert!(
        err.contains("key `image`")
            && err.contains(
                "has no container runtime, and kubeadm's kubelet needs one: add \"containerd\""
            ),
        "{err}"
    );
}

#[test]
fn kubernetes_versions_have_the_distribution_form() {
    let cluster = std::fs::read_to_string(repo_root().join("nodes/cluster.toml")).unwrap();
    for bad in [
        "1.32.7",
        "v1.32.7+k3s1",
        "1.32+k3s1",
        "1.32.7+rke2r1",
        "1.32.7+k3s",
    ] {
        let (_d, err) = project_with(
            "nodes/cluster.toml",
            &cluster.replace("\"1.32.7+k3s1\"", &format!("\"{bad}\"")),
        );
        assert!(
            err.contains("key `kubernetes.version`")
                && err.contains(&format!(
                    "version {bad:?} is not a k3s release: write it like \"1.32.7+k3s1\""
                )),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_second_control_plane_node_is_refused_at_its_role() {
    // pi-control.toml copied as a new user would, with its own hostname, MAC and address.
    let control = std::fs::read_to_string(repo_root().join("nodes/pi-control.toml")).unwrap();
    let copy = control
        .replace("hostname = \"pi-control\"", "hostname = \"pi-control2\"")
        .replace("dc:a6:32:00:10:11", "dc:a6:32:00:10:19")
        .replace("10.0.10.11/24", "10.0.10.19/24");
    let (_, err) = project_with("nodes/pi-control2.toml", &copy);
    assert_names(
        &err,
        "pi-control2.toml",
        6,
        "role",
        "a second control-plane node: pi-control (",
    );
    assert!(
        err.contains("nodes/pi-control.toml) is the cluster's control plane")
            && err.contains("make this node `role = \"worker\"`"),
        "{err}"
    );
    // As a worker it loads.
    let worker = copy
        .replace("role = \"control-plane\"", "role = \"worker\"")
        .replace(
            "taints = [\"node-role.kubernetes.io/control-plane:NoSchedule\"]\n",
            "",
        );
    let dir = scratch_project(&[("nodes/pi-control2.toml", &worker)]);
    assert_eq!(Project::load(dir.path()).unwrap().nodes.len(), 5);
}

#[test]
fn nodes_need_their_own_hostname_mac_and_address() {
    // As a new user adds a node: pi-worker.toml copied, only its MAC changed.
    let worker = std::fs::read_to_string(repo_root().join("nodes/pi-worker.toml")).unwrap();
    let copy = worker.replace("dc:a6:32:00:10:21", "dc:a6:32:00:10:29");
    assert_ne!(copy, worker);
    let (_, err) = project_with("nodes/pi-worker2.toml", &copy);
    assert_names(
        &err,
        "pi-worker2.toml",
        2,
        "hostname",
        "hostname \"pi-worker\" is also node pi-worker's (",
    );
    assert!(
        err.contains("nodes/pi-worker.toml)"),
        "names both files: {err}"
    );
    // The hostname changed too: the address is next.
    let copy2 = copy.replace("hostname = \"pi-worker\"", "hostname = \"pi-worker2\"");
    let (_, err) = project_with("nodes/pi-worker2.toml", &copy2);
    assert_names(
        &err,
        "pi-worker2.toml",
        12,
        "network.address",
        "address 10.0.10.21 is also node pi-worker's",
    );
    // Another address (another prefix does not make it another address).
    let (_, err) = project_with(
        "nodes/pi-worker2.toml",
        &copy2.replace("10.0.10.21/24", "10.0.10.21/25"),
    );
    assert!(err.contains("address 10.0.10.21 is also"), "{err}");
    // Only the MAC kept.
    let copy3 = worker
        .replace("hostname = \"pi-worker\"", "hostname = \"pi-worker3\"")
        .replace("10.0.10.21/24", "10.0.10.29/24");
    let (_, err) = project_with("nodes/pi-worker3.toml", &copy3);
    assert_names(
        &err,
        "pi-worker3.toml",
        8,
        "mac",
        "MAC address dc:a6:32:00:10:21 is also node pi-worker's",
    );
    // Hostnames compare as DNS does, without case.
    let (_, err) = project_with(
        "nodes/pi-worker2.toml",
        &copy
            .replace("\"pi-worker\"", "\"PI-WORKER\"")
            .replace("10.0.10.21", "10.0.10.29"),
    );
    assert!(err.contains("is also node pi-worker's"), "{err}");
    // All three changed: it loads.
    let ok = copy3.replace("dc:a6:32:00:10:21", "dc:a6:32:00:10:29");
    let dir = scratch_project(&[("nodes/pi-worker3.toml", &ok)]);
    assert_eq!(Project::load(dir.path()).unwrap().nodes.len(), 5);
}

#[test]
fn a_gateway_is_not_the_nodes_own_address_and_pxe_nodes_have_a_mac() {
    let err = bad_node("10.0.10.1\"", "10.0.10.21\"");
    assert_names(
        &err,
        "pi-worker.toml",
        10,
        "network.gateway",
        "gateway 10.0.10.21 is the node's own address",
    );
    let x86 = std::fs::read_to_string(repo_root().join("nodes/x86-storage.toml")).unwrap();
    let no_mac: String = x86
        .lines()
        .filter(|l| !l.starts_with("mac ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let (_, err) = project_with("nodes/x86-storage.toml", &no_mac);
    assert!(
        err.contains("x86-storage.toml")
            && err.contains("key `mac` is missing: a PXE node is matched by its MAC address"),
        "{err}"
    );
}

#[test]
fn root_slot_out_of_range_or_on_a_pxe_node() {
    let err = bad_node("role = \"worker\"", "role = \"worker\"\nroot_slot_mib = 16");
    assert!(
        err.contains("pi-worker.toml:")
            && err.contains("root_slot_mib = 16: give the root between 64 and 1048576 MiB"),
        "{err}"
    );
    let pxe = std::fs::read_to_string(repo_root().join("nodes/x86-storage.toml")).unwrap();
    let (_dir, err) = project_with(
        "nodes/x86-storage.toml",
        &pxe.replacen(
            "role = \"worker\"",
            "role = \"worker\"\nroot_slot_mib = 4096",
            1,
        ),
    );
    assert!(
        err.contains("x86-storage.toml:") && err.contains("a PXE node has no card"),
        "{err}"
    );
    let ok = NODE.replacen(
        "role = \"worker\"",
        "role = \"worker\"\nroot_slot_mib = 4096",
        1,
    );
    let dir = scratch_project(&[("nodes/pi-worker.toml", &ok)]);
    let project = cairn_project::Project::load(dir.path()).unwrap();
    assert_eq!(project.node("pi-worker").unwrap().root_slot_mib(), 4096);
    assert_eq!(
        project.node("pi-control").unwrap().root_slot_mib(),
        2048,
        "the default"
    );
}
