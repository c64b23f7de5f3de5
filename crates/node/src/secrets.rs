//! A node's secrets file, checked before it is written to a card or served: the shape the
//! node's init can read (`KEY=value` lines a shell sources, within the card's reserved
//! area) and what the node's distribution and role need (`join_token`, and `ca_cert_hash`
//! for a kubeadm worker). A file that passes boots; one that does not is refused here,
//! naming the file, line and key, instead of on the node's console.
//!
//! No message quotes a value: the file holds the cluster's join token.

use cairn_project::{Distribution, Role};
use cairn_steps::Error;
use std::path::Path;

/// The keys a node's init reads.
pub const KEYS: [&str; 2] = ["join_token", "ca_cert_hash"];

/// What the node the secrets are for needs; `None` fields when the node is not in the
/// project (a pulled node flashed on another machine): then only what every node needs is
/// checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub distribution: Option<Distribution>,
    pub role: Option<Role>,
}

impl Needs {
    pub fn of(cluster: &cairn_project::ClusterSpec, node: &cairn_project::NodeSpec) -> Needs {
        Needs {
            distribution: Some(cluster.kubernetes.distribution),
            role: Some(node.role),
        }
    }

    fn kubeadm_worker(self) -> bool {
        self.distribution == Some(Distribution::Kubeadm) && self.role == Some(Role::Worker)
    }
}

/// Checks the secrets file at `path` (its `bytes`) for a node with `needs`, the file at
/// most `area` bytes.
pub fn check(path: &Path, bytes: &[u8], area: u64, needs: Needs) -> Result<(), Error> {
    let file = path.display();
    if bytes.len() as u64 > area {
        return Err(Error::msg(format!(
            "{file}: {} bytes; the card reserves {area} for secrets",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.contains('\0'))
        .ok_or_else(|| Error::msg(format!("{file}: not a text file")))?;
    // The node reads the file as shell assignments: only plain KEY=value lines, whose
    // values need no quoting, pass.
    let unsafe_char =
        |c: char| c.is_whitespace() || c.is_control() || "\"'`$\\;&|<>(){}*?[]#~!".contains(c);
    let mut seen: Vec<(&str, &str, usize)> = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let place = format!("{file}:{}", n + 1);
        if line.contains('\r') {
            return Err(Error::msg(format!(
                "{place}: a carriage return (Windows line ends): save the file with plain newlines"
            )));
        }
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::msg(format!("{place}: not a KEY=value line")));
        };
        let key_ok = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if !key_ok {
            return Err(Error::msg(format!(
                "{place}: {key:?} is not a variable name"
            )));
        }
        if !KEYS.contains(&key) {
            let hint = match KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(k) => format!(" (keys are lower case: {k})"),
                None => String::new(),
            };
            return Err(Error::msg(format!(
                "{place}: unknown key {key}{hint}; a node reads {}",
                KEYS.join(" and ")
            )));
        }
        if value.chars().any(unsafe_char) {
            return Err(Error::msg(format!(
                "{place}: the value of {key} holds a space, quote or shell character (tokens, hashes and keys never do)"
            )));
        }
        if value.is_empty() {
            return Err(Error::msg(format!("{place}: {key} is empty")));
        }
        if let Some((_, _, first)) = seen.iter().find(|(k, _, _)| *k == key) {
            return Err(Error::msg(format!(
                "{place}: {key} again (first on line {first}): keep one"
            )));
        }
        seen.push((key, value, n + 1));
    }
    let value = |key: &str| {
        seen.iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, l)| (*v, *l))
    };
    let Some((token, line)) = value("join_token") else {
        return Err(Error::msg(format!(
            "{file}: no join_token: every node joins with the cluster's token (k3s: the server's token; kubeadm: a bootstrap token such as abcdef.0123456789abcdef)"
        )));
    };
    if needs.distribution == Some(Distribution::Kubeadm) && !is_bootstrap_token(token) {
        return Err(Error::msg(format!(
            "{file}:{line}: join_token is not a kubeadm bootstrap token (6 and 16 characters of a-z and 0-9 joined by a dot, e.g. abcdef.0123456789abcdef; `kubeadm token create` makes one)"
        )));
    }
    match value("ca_cert_hash") {
        Some((hash, line)) if !is_ca_cert_hash(hash) => Err(Error::msg(format!(
            "{file}:{line}: ca_cert_hash is not sha256: and 64 hex digits (the hash `kubeadm token create --print-join-command` prints after --discovery-token-ca-cert-hash)"
        ))),
        None if needs.kubeadm_worker() => Err(Error::msg(format!(
            "{file}: no ca_cert_hash: a kubeadm worker checks the control plane's CA with it (`kubeadm token create --print-join-command` on the control plane prints it as sha256:...)"
        ))),
        _ => Ok(()),
    }
}

/// kubeadm's bootstrap token form: `[a-z0-9]{6}.[a-z0-9]{16}`.
fn is_bootstrap_token(t: &str) -> bool {
    let part = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    t.split_once('.')
        .is_some_and(|(id, secret)| part(id, 6) && part(secret, 16))
}

fn is_ca_cert_hash(h: &str) -> bool {
    h.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "q7zt3x.k4m9p2w8r6v1n5b3";
    const HASH: &str = "sha256:5f4dcc3b5aa765d61d8327deb882cf99e1c7a4f3b6d2a8e9f0c1b2d3e4f5a6b7";

    fn needs(d: Distribution, r: Role) -> Needs {
        Needs {
            distribution: Some(d),
            role: Some(r),
        }
    }

    fn err(text: &str, n: Needs) -> String {
        check(Path::new("s.env"), text.as_bytes(), 4096, n)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn what_each_node_needs_passes() {
        let ok = |text: &str, n: Needs| check(Path::new("s.env"), text.as_bytes(), 4096, n);
        let k3s = needs(Distribution::K3s, Role::Worker);
        ok("join_token=K10abc::server:xyz\n", k3s).unwrap();
        ok(
            "# a comment\n\njoin_token=anything-safe\n",
            Needs::default(),
        )
        .unwrap();
        let worker = needs(Distribution::Kubeadm, Role::Worker);
        ok(
            &format!("join_token={TOKEN}\nca_cert_hash={HASH}\n"),
            worker,
        )
        .unwrap();
        let cp = needs(Distribution::Kubeadm, Role::ControlPlane);
        ok(&format!("join_token={TOKEN}\n"), cp).unwrap();
    }

    #[test]
    fn what_a_node_cannot_use_is_refused_naming_line_and_key() {
        let k3s = needs(Distribution::K3s, Role::Worker);
        assert_eq!(
            err("token=abc\n", k3s),
            "s.env:1: unknown key token; a node reads join_token and ca_cert_hash"
        );
        assert_eq!(
            err("JOIN_TOKEN=abc\n", k3s),
            "s.env:1: unknown key JOIN_TOKEN (keys are lower case: join_token); a node reads join_token and ca_cert_hash"
        );
        assert_eq!(err("join_token=\n", k3s), "s.env:1: join_token is empty");
        assert_eq!(
            err("join_token=abc\n# again\njoin_token=def\n", k3s),
            "s.env:3: join_token again (first on line 1): keep one"
        );
        assert!(
            err("# nothing\n", k3s).starts_with("s.env: no join_token: every node joins"),
            "{}",
            err("# nothing\n", k3s)
        );
        let worker = needs(Distribution::Kubeadm, Role::Worker);
        let missing = err(&format!("join_token={TOKEN}\n"), worker);
        assert!(
            missing.starts_with("s.env: no ca_cert_hash: a kubeadm worker"),
            "{missing}"
        );
        let bad_token = err(&format!("join_token=abc\nca_cert_hash={HASH}\n"), worker);
        assert!(
            bad_token.starts_with("s.env:1: join_token is not a kubeadm bootstrap token"),
            "{bad_token}"
        );
        assert!(!bad_token.contains("=abc"), "no value quoted: {bad_token}");
        let bad_hash = err(&format!("join_token={TOKEN}\nca_cert_hash=5f4d\n"), worker);
        assert!(
            bad_hash.starts_with("s.env:2: ca_cert_hash is not sha256: and 64 hex digits"),
            "{bad_hash}"
        );
        // The shape a shell reads, as before.
        assert!(err("join_token=a b\n", k3s).contains("holds a space"));
        assert!(err("join_token=a\r\n", k3s).contains("carriage return"));
        assert!(err("just a token\n", k3s).contains("not a KEY=value line"));
        assert!(
            check(Path::new("s.env"), &[b'a'; 5000], 4096, k3s)
                .unwrap_err()
                .to_string()
                .contains("5000 bytes; the card reserves 4096")
        );
    }
}
