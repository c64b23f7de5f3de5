//! Debian's `docker-registry` (the distribution engine inside Harbor) started on 127.0.0.1
//! for a test, with htpasswd basic auth or token auth. The token server is in-process: it
//! checks Basic credentials and issues RS256 JWTs (signed with the openssl CLI) whose `kid`
//! is the libtrust key id the registry derives from the certificate.

use super::require_tool;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub enum Auth {
    /// htpasswd (bcrypt) with one user.
    Basic { user: String, password: String },
    /// Token auth: the token server accepts this user and issues tokens valid for
    /// `lifetime_s` seconds.
    Token {
        user: String,
        password: String,
        lifetime_s: u64,
        /// What the token server tells the client (`expires_in`); more than `lifetime_s`
        /// makes tokens expire while the client still trusts them.
        advertised_s: u64,
    },
}

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    pub dir: tempfile::TempDir,
    child: Child,
    /// Tokens issued (token auth).
    pub tokens_issued: Arc<AtomicUsize>,
    /// Scopes asked for, in order (token auth).
    pub scopes: Arc<Mutex<Vec<String>>>,
    /// The token server (token auth).
    pub realm: Option<String>,
    /// The private CA's certificate (TLS).
    pub ca: Option<PathBuf>,
}

impl Registry {
    /// The docker-registry process (to stop it with SIGSTOP: a registry that no longer
    /// answers, its port still open).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).
fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = require_tool("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=cairn-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        Registry::start_with(auth, false)
    }

    /// With `tls`, the registry serves HTTPS with a certificate from a private CA, whose
    /// certificate is then at `ca`.
    pub fn start_with(auth: Auth, tls: bool) -> Registry {
        let registry = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tokens_issued = Arc::new(AtomicUsize::new(0));
        let scopes: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut token_realm = None;
        let auth_yaml = match &auth {
            Auth::Basic { user, password } => {
                let htpasswd = require_tool("htpasswd", "apache2-utils");
                let file = dir.path().join("htpasswd");
                let out = Command::new(htpasswd)
                    .args(["-Bbn", user, password])
                    .output()
                    .unwrap();
                assert!(out.status.success());
                std::fs::write(&file, out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: cairn-test\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token {
                user,
                password,
                lifetime_s,
                advertised_s,
            } => {
                let (cert, key, kid) = make_key(dir.path());
                let realm = start_token_server(
                    user.clone(),
                    password.clone(),
                    *lifetime_s,
                    *advertised_s,
                    key,
                    kid,
                    tokens_issued.clone(),
                    scopes.clone(),
                );
                token_realm = Some(realm.clone());
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: cairn-test-registry\n    issuer: cairn-test-issuer\n    rootcertbundle: {}\n",
                    cert.display()
                )
            }
        };
        let tls_yaml = if tls {
            let (_, cert, key) = make_tls(dir.path());
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yaml}{auth_yaml}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(registry)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let host = format!("127.0.0.1:{port}");
        let dir_path = dir.path().to_path_buf();
        for _ in 0..100 {
            if TcpStream::connect(&host).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry {
            host,
            dir,
            child,
            tokens_issued,
            scopes,
            realm: token_realm,
            ca: tls.then(|| dir_path.join("ca.crt")),
        }
    }

    /// The registry's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn base32(bytes: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer = 0u64;
    let mut bits = 0;
    for b in bytes {
        buffer = (buffer << 8) | u64::from(*b);
        bits += 8;
        while bits >= 5 {
            out.push(A[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A self-signed certificate and its RSA key (openssl CLI), and the libtrust key id.
fn make_key(dir: &Path) -> (PathBuf, PathBuf, String) {
    let openssl = require_tool("openssl", "openssl");
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    let ok = Command::new(&openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cairn-test-token",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let der = Command::new(&openssl)
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(der.status.success());
    let hash = cairn_formats::Digest::of(&der.stdout);
    let b32 = base32(&hash.as_bytes()[..30]);
    let kid = b32
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    (cert, key, kid)
}

fn sign(key: &Path, input: &str) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn start_token_server(
    user: String,
    password: String,
    lifetime_s: u64,
    advertised_s: u64,
    key: PathBuf,
    kid: String,
    issued: Arc<AtomicUsize>,
    scopes: Arc<Mutex<Vec<String>>>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let expected = format!("Basic {}", b64std(format!("{user}:{password}").as_bytes()));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (user, key, kid, issued, scopes, expected) = (
                user.clone(),
                key.clone(),
                kid.clone(),
                issued.clone(),
                scopes.clone(),
                expected.clone(),
            );
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut authorization = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = v.trim().to_string();
                        }
                    }
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let mut access = Vec::new();
                for kv in query.split('&') {
                    if let Some(scope) = kv.strip_prefix("scope=") {
                        let scope = percent_decode(scope);
                        scopes.lock().unwrap().push(scope.clone());
                        let parts: Vec<&str> = scope.splitn(3, ':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({
                                "type": parts[0], "name": parts[1],
                                "actions": parts[2].split(',').collect::<Vec<_>>(),
                            }));
                        }
                    }
                }
                let mut out = stream;
                // No credentials: a public project's pull (push is not granted).
                let anonymous = authorization.is_empty();
                if anonymous {
                    for a in &mut access {
                        a["actions"] = serde_json::json!(
                            a["actions"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .filter(|x| *x == "pull")
                                .collect::<Vec<_>>()
                        );
                    }
                }
                if !anonymous && authorization != expected {
                    let body =
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
                    let _ = write!(
                        out,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                let now = unix_now();
                let n = issued.fetch_add(1, Ordering::SeqCst);
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": kid});
                let claims = serde_json::json!({
                    "iss": "cairn-test-issuer", "sub": user, "aud": "cairn-test-registry",
                    "exp": now + lifetime_s, "nbf": now - 10, "iat": now, "jti": format!("t{n}"),
                    "access": access,
                });
                let input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let token = format!("{input}.{}", b64url(&sign(&key, &input)));
                let body =
                    serde_json::json!({"token": token, "expires_in": advertised_s}).to_string();
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = out.flush();
            });
        }
    });
    realm
}

/// Standard base64 with padding (Basic credentials, Docker's `auth` values).
pub fn b64std(bytes: &[u8]) -> String {
    b64url(bytes).replace('-', "+").replace('_', "/")
        + match bytes.len() % 3 {
            1 => "==",
            2 => "=",
            _ => "",
        }
}
