//! Shared helpers of the integration tests: the xtask binary, project copies, host tools,
//! a loopback HTTP server with fault injection, and a .deb writer.

pub mod deb;
pub mod digests;
pub mod kill;
pub mod proxy;
pub mod registry;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The xtask binary with the project at `root` and its store inside it.
pub fn xtask(root: &Path) -> Command {
    xtask_store(root, &root.join("artifacts"))
}

/// The xtask binary with the project at `root` and the store at `store`.
pub fn xtask_store(root: &Path, store: &Path) -> Command {
    xtask_args(Command::new(env!("CARGO_BIN_EXE_xtask")), root, store)
}

/// [`xtask_store`] for a command that boots QEMU (`boot-test`), ahead of the builds the
/// other tests run beside it: a TCG guest starved of CPU stalls (RCU stalls, a raspi2b
/// timing out), while a build only takes longer.
pub fn xtask_boot(root: &Path, store: &Path) -> Command {
    let mut c = boot_priority();
    c.arg(env!("CARGO_BIN_EXE_xtask"));
    xtask_args(c, root, store)
}

/// `nice -n -10`, to put a program ahead of the builds on the same cores (as root; GNU nice
/// runs the program unchanged, saying so, where it may not raise a priority).
pub fn boot_priority() -> Command {
    let mut c = Command::new("nice");
    c.args(["-n", "-10"]);
    c
}

fn xtask_args(mut c: Command, root: &Path, store: &Path) -> Command {
    c.arg("--root")
        .arg(root)
        .arg("--store")
        .arg(store)
        .arg("--quiet");
    c.env_remove("CAIRN_ROOT").env_remove("CAIRN_STORE");
    // Registry credentials come only from what a test sets up.
    c.env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR");
    c.env("DOCKER_CONFIG", root.join(".no-docker-config"));
    c
}

/// The xtask binary on the project at `dir` (store inside it) under a varied environment:
/// time zone, locale, umask and, through faketime, the clock.
pub fn xtask_varied(
    dir: &Path,
    tz: &str,
    lang: &str,
    umask: &str,
    faketime: Option<&str>,
) -> Command {
    let mut cmd = match faketime {
        Some(offset) => {
            let mut c = Command::new(require_tool("faketime", "faketime"));
            c.args(["-f", offset, "sh"]);
            c
        }
        None => Command::new("sh"),
    };
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .arg("--root")
        .arg(dir)
        .arg("--quiet")
        .env("TZ", tz)
        .env("LANG", lang)
        .env("LC_ALL", lang)
        .env_remove("CAIRN_STORE")
        .env_remove("SOURCE_DATE_EPOCH")
        .current_dir(dir);
    cmd
}

/// Runs `cmd` with `input` on its standard input; returns its output (not checked).
pub fn output_with_stdin(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command may exit without reading its input (a refused flag, say).
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// Runs, asserting success; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs, asserting failure; returns stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("spawn");
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Copies the example project (specs, files and lock) into `dest`.
pub fn copy_project(dest: &Path) {
    let root = repo_root();
    for sub in ["images", "images/files", "nodes"] {
        std::fs::create_dir_all(dest.join(sub)).unwrap();
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dest.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(root.join("inputs.lock"), dest.join("inputs.lock")).unwrap();
}

/// Fails (naming the tool and its Debian package) when a host tool is missing: a test
/// that needs a tool never passes silently without it.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "host tool `{tool}` is missing: install it with `apt-get install {package}` (or run .ci/run, which does)"
        ),
    }
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Standard base64 (as cosign's signature annotation holds it), decoded.
pub fn b64decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text}"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    cairn_formats::Digest::of(bytes).hex()
}

/// Copies the example project `examples/<name>` into `dest`, following its symlinks (its
/// image files are the main example's).
pub fn copy_example(name: &str, dest: &Path) {
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            // Follows symlinks: a linked directory is copied as a directory.
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                if entry.file_name() != "artifacts" {
                    copy_tree(&path, &to.join(entry.file_name()));
                }
            } else {
                std::fs::copy(&path, to.join(entry.file_name())).unwrap();
            }
        }
    }
    copy_tree(&repo_root().join("examples").join(name), dest);
}

/// A stand-in for a Kubernetes binary: it says how it was called and what the
/// configuration it was given holds (the token and CA hash only as sha256 digests, so no
/// secret reaches the console), and leaves the files a real join would, so a second boot
/// finds the node joined.
pub fn stand_in(name: &str, arch: &str) -> String {
    let said = format!(
        "#!/bin/sh\n# Cairn test stand-in for {name} ({arch}).\necho \"stand-in {name} for {arch}: $*\"\n"
    );
    match name {
        "kubeadm" => said + KUBEADM_STAND_IN,
        "k3s" => said + K3S_STAND_IN,
        _ => said,
    }
}

const KUBEADM_STAND_IN: &str = r#"config=""
prev=""
for a in "$@"; do
  [ "$prev" = --config ] && config="$a"
  prev="$a"
done
[ -n "$config" ] || exit 0
digest() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
kind=$(awk '/^kind: (Init|Join)Configuration/ { print $2; exit }' "$config")
endpoint=$(awk '/apiServerEndpoint:|controlPlaneEndpoint:/ { print $2; exit }' "$config")
token=$(awk -F'"' '/token: "/ { print $2; exit }' "$config")
ca=$(awk -F'"' '/- "sha256:/ { print $2; exit }' "$config")
labels=$(awk '/name: node-labels/ { getline; print $2; exit }' "$config")
taints=$(awk '/- key:/ { printf "%s,", $3 }' "$config")
echo "stand-in kubeadm: kind=$kind endpoint=$endpoint labels=$labels taints=$taints token-sha256=$(digest "$token") ca-hash-sha256=$(digest "$ca")" | tr -d '"'
mkdir -p /etc/kubernetes
case "$1" in
  init) touch /etc/kubernetes/admin.conf /etc/kubernetes/kubelet.conf ;;
  join) touch /etc/kubernetes/kubelet.conf ;;
esac
"#;

/// k3s as its unit runs it (`k3s server` or `k3s agent`, Type=notify): reads the config
/// and registries files k3s reads, says what it found (the token only as a digest, and
/// whether a containerd other than its own is on the node), keeps state under
/// /var/lib/rancher/k3s as a real agent does, tells systemd it is ready, and keeps running.
const K3S_STAND_IN: &str = r#"case "$1" in server | agent) ;; *) exit 0 ;; esac
config=/etc/rancher/k3s/config.yaml
digest() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
value() { awk -v k="$1:" '$1 == k { print $2; exit }' "$config" | tr -d '"'; }
list() {
  awk -v k="$1:" '$1 == k { on = 1; next } on && $1 == "-" { printf "%s,", $2; next } { on = 0 }' "$config" | tr -d '"'
}
token=$(cat "$(value token-file)")
mirror=$(awk '$1 == "endpoint:" { getline; print $2; exit }' /etc/rancher/k3s/registries.yaml | tr -d '"')
rewrite=$(awk '$1 == "rewrite:" { getline; print $2; exit }' /etc/rancher/k3s/registries.yaml | tr -d '"')
state=/var/lib/rancher/k3s/cairn-stand-in
if [ -e "$state" ]; then start=again; else start=first; mkdir -p "${state%/*}"; : >"$state"; fi
echo "stand-in k3s: role=$1 start=$start server=$(value server) node-ip=$(value node-ip) tls-san=$(list tls-san) labels=$(list node-label) taints=$(list node-taint) token-sha256=$(digest "$token") mirror=$mirror rewrite=$rewrite other-containerd=$(command -v containerd || echo none)"
exec systemd-notify --exec READY=1 \; sleep infinity
"#;

/// Replaces the project's real Kubernetes pins (upstream binaries, which cannot be fetched
/// here) with small stand-ins at the same URLs, pinned with `prefetch --file` as a user with
/// copies of the files would.
pub fn pin_stand_ins(project: &Path) {
    let lock_path = project.join("inputs.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    let mut kept = String::new();
    let mut pinned = Vec::new();
    for (i, block) in lock.split("\n[[url]]\n").enumerate() {
        if i == 0 {
            kept.push_str(block);
            continue;
        }
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap()
                .to_string()
        };
        let name = field("name");
        match name.strip_prefix("kubernetes/") {
            Some(binary) => pinned.push((binary.to_string(), field("url"))),
            None => {
                kept.push_str("\n[[url]]\n");
                kept.push_str(block);
            }
        }
    }
    if !kept.ends_with('\n') {
        kept.push('\n');
    }
    assert!(
        !pinned.is_empty(),
        "{} pins no Kubernetes binary",
        lock_path.display()
    );
    std::fs::write(&lock_path, kept).unwrap();
    let dir = project.join("stand-ins");
    std::fs::create_dir_all(&dir).unwrap();
    for (binary, url) in pinned {
        let (name, arch) = binary.rsplit_once('-').unwrap();
        let file = dir.join(&binary);
        std::fs::write(&file, stand_in(name, arch)).unwrap();
        let out = run_ok(xtask(project).args(["prefetch", &url, "--file"]).arg(&file));
        assert_eq!(
            out.trim(),
            format!("sha256:{}", sha256_hex(&std::fs::read(&file).unwrap()))
        );
    }
}

/// One heavy step at a time on 2 cores, across every module of the binary: a build of
/// several OS images, a TCG boot (a boot next to two builds is slow enough to look like a
/// hang), or a run whose kill moments are fractions of measured times.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}
