//! The HTTP side of the OCI distribution API: one registry, anonymous first, then Basic
//! or Bearer as the registry's `WWW-Authenticate` asks, tokens cached per scope and
//! renewed on a 401 in the middle of a long push; retries with backoff on 5xx and dropped
//! connections for idempotent requests; redirects followed by hand, never carrying
//! credentials to another host.

use crate::auth::{Challenge, TokenCache, parse_challenges, parse_token_response};
use crate::credentials::Credentials;
use crate::error::RegistryError;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use ureq::http;

/// Every media type Cairn reads, for `Accept` on manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Attempts for an idempotent request before giving up on 5xx or a dropped connection.
pub const ATTEMPTS: u32 = 5;

/// How to reach one registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `host[:port]`.
    pub host: String,
    /// Plain HTTP, for a registry named with `--insecure` (tests on loopback).
    pub insecure: bool,
    pub credentials: Option<Credentials>,
    /// First retry delay; doubles each attempt.
    pub backoff: Duration,
    /// PEM certificates to trust for this registry instead of the public roots (a
    /// homelab's private CA).
    pub ca_pem: Option<Vec<u8>>,
}

/// A request body that can be sent again (after a 401 or a retry).
#[derive(Clone, Copy)]
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of the file from `offset`; `on_read` hears of every piece sent.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        on_read: Option<&'a (dyn Fn(u64) + Sync)>,
    },
}

/// Counts what ureq reads from a body.
struct Counting<'a, R> {
    inner: R,
    on_read: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(f) = self.on_read {
            f(n as u64);
        }
        Ok(n)
    }
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

pub struct Client {
    agent: ureq::Agent,
    /// For PUT, POST and PATCH: a registry may take minutes to commit a large blob (Harbor
    /// on object storage, a small home server), so their answer is waited for longer.
    writing: ureq::Agent,
    pub config: RegistryConfig,
    base: String,
    tokens: Mutex<TokenCache>,
    /// The registry asked for Basic: send the credentials with every request.
    basic: AtomicBool,
}

pub type Response = http::Response<ureq::Body>;

fn agent(ca_pem: Option<&[u8]>, answer: Duration) -> Result<ureq::Agent, RegistryError> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(pem) = ca_pem {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c.to_owned()),
                Ok(_) => {}
                Err(e) => return Err(RegistryError::other(format!("the CA file is not PEM: {e}"))),
            }
        }
        if certs.is_empty() {
            return Err(RegistryError::other("the CA file holds no certificate"));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(answer))
        // ureq has no idle timeout: bound each body so a stalled connection cannot hang a
        // push or pull (a 512 MiB chunk needs only ~150 KB/s to finish within it).
        .timeout_send_body(Some(Duration::from_secs(3600)))
        .timeout_recv_body(Some(Duration::from_secs(3600)))
        .build()
        .into())
}

impl Client {
    pub fn new(config: RegistryConfig) -> Result<Client, RegistryError> {
        let scheme = if config.insecure { "http" } else { "https" };
        Ok(Client {
            agent: agent(config.ca_pem.as_deref(), response_timeout())?,
            writing: agent(config.ca_pem.as_deref(), write_timeout())?,
            base: format!("{scheme}://{}", config.host),
            config,
            tokens: Mutex::new(TokenCache::default()),
            basic: AtomicBool::new(false),
        })
    }

    /// `https://host/v2/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// A `Location` header resolved against the registry (relative or absolute).
    pub fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/v2/{location}", self.base)
        }
    }

    fn same_host(&self, url: &str) -> bool {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(url);
        rest.split('/').next() == Some(self.config.host.as_str())
    }

    fn auth_header(&self, scope: &str, url: &str) -> Option<String> {
        if !self.same_host(url) {
            return None;
        }
        if let Some(t) = self.tokens.lock().expect("tokens").get(scope) {
            return Some(format!("Bearer {t}"));
        }
        if self.basic.load(Ordering::SeqCst) {
            return self.config.credentials.as_ref().map(|c| c.basic_header());
        }
        None
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        auth: Option<&str>,
    ) -> Result<Response, ureq::Error> {
        let (agent, answer) = if matches!(method, "PUT" | "POST" | "PATCH") {
            (&self.writing, write_timeout())
        } else {
            (&self.agent, response_timeout())
        };
        // Said on stderr (terminal or not) while the registry takes long to answer (an
        // upload's own time is the upload's: its bars show it).
        let _waiting = (!matches!(body, Body::File { .. }))
            .then(|| Waiting::start(format!("{method} {url}"), answer));
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let has_body = !matches!(body, Body::Empty) || matches!(method, "PUT" | "POST" | "PATCH");
        if has_body {
            req = req.header("Content-Length", body.len().to_string());
        }
        match body {
            Body::Empty => agent.run(
                req.body(())
                    .map_err(|e| ureq::Error::BadUri(e.to_string()))?,
            ),
            Body::Bytes(b) => agent.run(
                req.body(b)
                    .map_err(|e| ureq::Error::BadUri(e.to_string()))?,
            ),
            Body::File {
                path,
                offset,
                len,
                on_read,
            } => {
                let mut f = std::fs::File::open(path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut limited = Counting {
                    inner: f.take(len),
                    on_read,
                };
                let send = ureq::SendBody::from_reader(&mut limited);
                agent.run(
                    req.body(send)
                        .map_err(|e| ureq::Error::BadUri(e.to_string()))?,
                )
            }
        }
    }

    /// Sends a request for `scope` (`repository:NAME:pull,push`), authenticating as the
    /// registry asks. Idempotent methods (GET, HEAD, PUT of a manifest) are retried on 5xx
    /// and dropped connections; the answer is returned whatever its status.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        idempotent: bool,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        let mut authenticated = false;
        loop {
            attempt += 1;
            let auth = self.auth_header(scope, url);
            match self.send_once(method, url, headers, body, auth.as_deref()) {
                Ok(resp) if resp.status() == 401 && !self.same_host(url) => {
                    // Credentials are for the registry only, never for where it redirects.
                    let body = read_small(resp);
                    return Err(RegistryError::from_body(method, url, 401, &body));
                }
                Ok(resp) if resp.status() == 401 && !authenticated => {
                    let challenges = resp
                        .headers()
                        .get_all("www-authenticate")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(parse_challenges)
                        .collect::<Vec<_>>();
                    let body = self.reason(resp, method, url, headers, auth.as_deref());
                    if challenges.is_empty() {
                        return Err(RegistryError::from_body(method, url, 401, &body));
                    }
                    if auth.is_some() {
                        // The token or the credentials were refused: start over once.
                        self.tokens.lock().expect("tokens").forget(scope);
                    }
                    self.authenticate(&challenges, scope, &body, auth.is_some())?;
                    authenticated = true;
                    attempt -= 1;
                }
                Ok(resp) if resp.status() == 401 => {
                    let body = self.reason(resp, method, url, headers, auth.as_deref());
                    return Err(self.refused(scope, &body));
                }
                Ok(resp)
                    if idempotent
                        && (resp.status().is_server_error() || resp.status() == 429)
                        && attempt < ATTEMPTS =>
                {
                    drop(resp);
                    self.sleep(attempt);
                }
                Ok(resp) => return Ok(resp),
                Err(e) if idempotent && attempt < ATTEMPTS && transient(&e) => self.sleep(attempt),
                Err(e) => {
                    let message = explain(&e, self.config.insecure);
                    return Err(RegistryError::Transport {
                        method: method.into(),
                        url: url.into(),
                        message,
                    });
                }
            }
        }
    }

    /// POSTs JSON to Harbor's API (`/api/v2.0/...`) with the credentials (Basic, as the
    /// API takes them); returns the status and body.
    pub fn api_post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, Vec<u8>), RegistryError> {
        let url = format!("{}{path}", self.base);
        let bytes = serde_json::to_vec(body).expect("json");
        let auth = self.config.credentials.as_ref().map(|c| c.basic_header());
        let resp = self
            .send_once(
                "POST",
                &url,
                &[("Content-Type", "application/json")],
                Body::Bytes(&bytes),
                auth.as_deref(),
            )
            .map_err(|e| RegistryError::Transport {
                method: "POST".into(),
                url: url.clone(),
                message: explain(&e, self.config.insecure),
            })?;
        let status = resp.status().as_u16();
        Ok((status, read_small(resp)))
    }

    /// The body of an error answer. A HEAD answer has none, so the reason (Harbor's
    /// "project ... not found") is asked for again with a GET.
    fn reason(
        &self,
        resp: Response,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        auth: Option<&str>,
    ) -> Vec<u8> {
        let body = read_small(resp);
        if method != "HEAD" || !body.is_empty() {
            return body;
        }
        match self.send_once("GET", url, headers, Body::Empty, auth) {
            Ok(r) if r.status() == 401 || r.status() == 403 => read_small(r),
            _ => body,
        }
    }

    fn sleep(&self, attempt: u32) {
        std::thread::sleep(self.config.backoff * 2u32.saturating_pow(attempt - 1));
    }

    fn refused(&self, scope: &str, body: &[u8]) -> RegistryError {
        let text = String::from_utf8_lossy(body).to_ascii_lowercase();
        let project = scope
            .strip_prefix("repository:")
            .and_then(|s| s.split('/').next())
            .unwrap_or("");
        if text.contains("project") && text.contains("not found") {
            return RegistryError::Auth {
                registry: self.config.host.clone(),
                message: format!(
                    "project {project} does not exist: create project {project} in Harbor, or pass --create-project"
                ),
            };
        }
        let who = match &self.config.credentials {
            Some(c) => format!("the credentials of {} (from {}) were", c.username, c.source),
            None => "anonymous access was".to_string(),
        };
        RegistryError::Auth {
            registry: self.config.host.clone(),
            message: format!(
                "{who} refused for {scope}: check the account's permissions on the project; log in with `docker login {}` (or REGISTRY_AUTH_FILE, or --username with --password-stdin)",
                self.config.host
            ),
        }
    }

    fn authenticate(
        &self,
        challenges: &[Challenge],
        scope: &str,
        body: &[u8],
        had_auth: bool,
    ) -> Result<(), RegistryError> {
        if let Some(bearer) = challenges.iter().find(|c| c.is_bearer()) {
            let realm = bearer.param("realm").ok_or_else(|| RegistryError::Auth {
                registry: self.config.host.clone(),
                message: "a Bearer challenge without a realm".into(),
            })?;
            if !realm.starts_with("https://") && !self.config.insecure {
                return Err(RegistryError::Auth {
                    registry: self.config.host.clone(),
                    message: format!(
                        "the token server {realm} is not HTTPS; refusing to send credentials there"
                    ),
                });
            }
            let mut url = format!("{realm}?");
            let mut params = Vec::new();
            if let Some(service) = bearer.param("service") {
                params.push(format!("service={}", encode(service)));
            }
            let mut scopes: Vec<&str> = vec![scope];
            if let Some(s) = bearer.param("scope") {
                scopes.extend(s.split(' ').filter(|s| *s != scope && !s.is_empty()));
            }
            for s in scopes {
                params.push(format!("scope={}", encode(s)));
            }
            url.push_str(&params.join("&"));
            let auth = self.config.credentials.as_ref().map(|c| c.basic_header());
            let mut attempt = 0;
            let resp = loop {
                attempt += 1;
                match self.send_once("GET", &url, &[], Body::Empty, auth.as_deref()) {
                    Ok(r) if r.status().is_server_error() && attempt < ATTEMPTS => {
                        self.sleep(attempt)
                    }
                    Ok(r) => break r,
                    Err(e) if attempt < ATTEMPTS && transient(&e) => self.sleep(attempt),
                    Err(e) => {
                        return Err(RegistryError::Transport {
                            method: "GET".into(),
                            url: realm.into(),
                            message: explain(&e, self.config.insecure),
                        });
                    }
                }
            };
            let status = resp.status().as_u16();
            let text = read_small(resp);
            if status == 401 || status == 403 {
                return Err(self.refused(scope, &text));
            }
            if status != 200 {
                return Err(RegistryError::from_body("GET", realm, status, &text));
            }
            let (token, expires) =
                parse_token_response(&text).ok_or_else(|| RegistryError::Auth {
                    registry: self.config.host.clone(),
                    message: format!("the token server {realm} answered without a token"),
                })?;
            self.tokens
                .lock()
                .expect("tokens")
                .put(scope, token, expires);
            return Ok(());
        }
        if challenges.iter().any(|c| c.is_basic()) {
            if self.config.credentials.is_none() {
                return Err(RegistryError::Auth {
                    registry: self.config.host.clone(),
                    message: format!(
                        "the registry asks for a login: `docker login {}`, or REGISTRY_AUTH_FILE, or --username with --password-stdin",
                        self.config.host
                    ),
                });
            }
            // Refused only when this very request carried the credentials; another thread
            // may have switched to Basic since this one was sent.
            let was_basic = self.basic.swap(true, Ordering::SeqCst);
            if was_basic && had_auth && !self.tokens.lock().expect("tokens").has(scope) {
                return Err(self.refused(scope, body));
            }
            return Ok(());
        }
        Err(RegistryError::Auth {
            registry: self.config.host.clone(),
            message: format!("unsupported authentication scheme {}", challenges[0].scheme),
        })
    }
}

fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
    )
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Up to 64 KiB of a body (error envelopes, tokens).
pub fn read_small(resp: Response) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(64 * 1024)
        .read_to_end(&mut out);
    out
}

/// A response header as text.
pub fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A transport error's text, with what to do where the cause is a known setup mistake: a
/// registry that answers TLS with plain HTTP, or a certificate the system does not trust.
fn explain(e: &ureq::Error, insecure: bool) -> String {
    let mut message = e.to_string();
    if matches!(e, ureq::Error::Timeout(_)) {
        message.push_str(&format!(
            ": no answer within {} s ({} s for a PUT, POST or PATCH; a request that can be repeated is tried {ATTEMPTS} times): is the registry up and reachable? (CAIRN_REGISTRY_TIMEOUT sets the wait, in seconds)",
            response_timeout().as_secs(),
            write_timeout().as_secs()
        ));
    } else if !insecure
        && (message.contains("InvalidContentType") || message.contains("corrupt message"))
    {
        message.push_str(
            ": the registry answered in plain HTTP, not TLS; if it serves plain HTTP (a test registry on a trusted LAN), pass --insecure (--cache-insecure for --cache)",
        );
    } else if message.contains("certificate") || message.contains("UnknownIssuer") {
        message.push_str(": if the registry has a private CA, pass --ca-file (or set registry.ca_file in nodes/cluster.toml)");
    }
    message
}

/// How long a request waits for the registry's answer (its status line) before it counts
/// as failed and is retried: 60 s, or `CAIRN_REGISTRY_TIMEOUT` seconds.
pub fn response_timeout() -> Duration {
    std::env::var("CAIRN_REGISTRY_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// After 5 s (or half the wait, when shorter) without an answer, a line on stderr as often,
/// naming
/// the request, until it is answered or fails (a stopped registry is visible at once, not
/// after the timeouts and retries).
struct Waiting {
    done: std::sync::Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a PUT, POST or PATCH waits for its answer: ten times [`response_timeout`]
/// (a blob's commit may take minutes).
pub fn write_timeout() -> Duration {
    response_timeout() * 10
}

impl Waiting {
    fn start(what: String, answer: Duration) -> Waiting {
        let done = std::sync::Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let (lock, cvar) = &*flag;
            let mut finished = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let (guard, timeout) = cvar
                    .wait_timeout(finished, (answer / 2).min(Duration::from_secs(5)))
                    .unwrap_or_else(|e| e.into_inner());
                finished = guard;
                if *finished {
                    return;
                }
                if timeout.timed_out() {
                    eprintln!(
                        "waiting for the registry: {what}: no answer for {} s (an attempt waits {} s)",
                        start.elapsed().as_secs(),
                        answer.as_secs()
                    );
                }
            }
        });
        Waiting {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
