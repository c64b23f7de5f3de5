//! Registry credentials from the places users already keep them: `REGISTRY_AUTH_FILE`,
//! containers' `auth.json`, Docker's `config.json` (`auths`, `credHelpers`, `credsStore`
//! through `docker-credential-*`). Credentials are never printed: `Debug` hides the secret.

use base64::Engine as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
    /// Where they came from, for messages (`~/.docker/config.json`, `docker-credential-pass`).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({} from {}, secret hidden)",
            self.username, self.source
        )
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.username, self.secret))
        )
    }
}

/// Where to look, decided once from the environment (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// `REGISTRY_AUTH_FILE`, then `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub auth_files: Vec<PathBuf>,
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
}

impl CredentialSources {
    pub fn from_env() -> CredentialSources {
        let mut auth_files = Vec::new();
        if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
            auth_files.push(PathBuf::from(f));
        }
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            auth_files.push(PathBuf::from(d).join("containers/auth.json"));
        }
        let docker_config = match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            Some(d) => Some(PathBuf::from(d).join("config.json")),
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
        };
        CredentialSources {
            auth_files,
            docker_config,
        }
    }

    /// The credentials for `host` (`host[:port]`), or None for anonymous access.
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>, String> {
        for file in &self.auth_files {
            if let Some(c) = from_auths_file(file, host)? {
                return Ok(Some(c));
            }
        }
        if let Some(file) = &self.docker_config {
            return from_docker_config(file, host);
        }
        Ok(None)
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

/// The entry of `auths` for `host`: keys may be `host`, `https://host`, `http://host/v2/`.
fn auths_entry<'a>(auths: &'a serde_json::Value, host: &str) -> Option<&'a serde_json::Value> {
    let obj = auths.as_object()?;
    obj.iter()
        .find(|(k, _)| {
            let k = k
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let k = k.split('/').next().unwrap_or(k);
            k == host
        })
        .map(|(_, v)| v)
}

fn decode_entry(entry: &serde_json::Value, source: &Path) -> Result<Option<Credentials>, String> {
    let source_name = source.display().to_string();
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| format!("{source_name}: an `auth` value is not base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| format!("{source_name}: an `auth` value is not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| format!("{source_name}: an `auth` value is not user:password"))?;
        return Ok(Some(Credentials {
            username: user.into(),
            secret: pass.into(),
            source: source_name,
        }));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.into(),
            secret: p.into(),
            source: source_name,
        })),
        _ => Ok(None),
    }
}

fn from_auths_file(path: &Path, host: &str) -> Result<Option<Credentials>, String> {
    let Some(v) = read_json(path)? else {
        return Ok(None);
    };
    match auths_entry(&v["auths"], host) {
        Some(entry) => decode_entry(entry, path),
        None => Ok(None),
    }
}

fn from_docker_config(path: &Path, host: &str) -> Result<Option<Credentials>, String> {
    let Some(v) = read_json(path)? else {
        return Ok(None);
    };
    if let Some(helper) = v["credHelpers"][host].as_str() {
        return credential_helper(helper, host);
    }
    if let Some(entry) = auths_entry(&v["auths"], host) {
        if let Some(c) = decode_entry(entry, path)? {
            return Ok(Some(c));
        }
    }
    if let Some(store) = v["credsStore"].as_str().filter(|s| !s.is_empty()) {
        return credential_helper(store, host);
    }
    Ok(None)
}

/// Runs `docker-credential-<helper> get` with the host on stdin.
pub fn credential_helper(helper: &str, host: &str) -> Result<Option<Credentials>, String> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {program} (named in the Docker config for {host}): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // "credentials not found in native keychain" means anonymous.
        if msg.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(format!(
            "{program} get failed for {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("{program} get answered something other than JSON"))?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) => Ok(Some(Credentials {
            username: u.into(),
            secret: s.into(),
            source: program,
        })),
        _ => Err(format!(
            "{program} get answered without Username and Secret"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_containers_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("robot$homelab+ci:s3cr3t");
        std::fs::write(
            &docker,
            format!(r#"{{"auths":{{"https://harbor.lan":{{"auth":"{auth}"}},"other:5000":{{"username":"u","password":"p"}}}}}}"#),
        )
        .unwrap();
        let sources = CredentialSources {
            auth_files: vec![dir.path().join("missing.json")],
            docker_config: Some(docker.clone()),
        };
        let c = sources.lookup("harbor.lan").unwrap().unwrap();
        assert_eq!(c.username, "robot$homelab+ci");
        assert_eq!(c.secret, "s3cr3t");
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "Debug hides the secret"
        );
        assert_eq!(sources.lookup("other:5000").unwrap().unwrap().secret, "p");
        assert_eq!(sources.lookup("nowhere").unwrap(), None);

        let containers = dir.path().join("auth.json");
        std::fs::write(
            &containers,
            r#"{"auths":{"harbor.lan":{"auth":"Zmlyc3Q6b25l"}}}"#,
        )
        .unwrap();
        let sources = CredentialSources {
            auth_files: vec![containers],
            docker_config: Some(docker),
        };
        let c = sources.lookup("harbor.lan").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("first", "one"));

        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        let bad = CredentialSources {
            auth_files: vec![dir.path().join("bad.json")],
            docker_config: None,
        };
        assert!(
            bad.lookup("x")
                .unwrap_err()
                .contains("bad.json is not valid JSON")
        );
    }
}
