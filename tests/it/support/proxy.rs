//! An HTTP proxy on 127.0.0.1 in front of a real registry, injecting the faults a real
//! registry will not produce on demand: 5xx answers, connections dropped in the middle of a
//! body, a wrong `Docker-Content-Digest`, corrupted bytes, redirects to another host.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: bool,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and no body) instead of forwarding.
    Status(u16),
    /// Forward, then send only this many body bytes of the answer and close.
    TruncateBody(usize),
    /// Forward, then replace the `Docker-Content-Digest` header.
    WrongDigest,
    /// Forward, then flip the first byte of the body.
    Corrupt,
    /// Answer 307 with this Location instead of forwarding.
    Redirect(String),
    /// Read the request, then close without answering.
    Drop,
    /// Answer 401 with this `WWW-Authenticate` (what a registry says to an expired token).
    Unauthorized(String),
    /// Answer with this status, `WWW-Authenticate` and body (Harbor's own answers).
    Respond(u16, String, String),
    /// Answer with this status and remove every rule (an API call that fixes the cause).
    RespondAndClear(u16),
}

/// A rule: requests whose method and path contain these strings get the fault, `times`
/// times (usize::MAX: always).
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    pub fault: Fault,
    pub times: usize,
}

pub struct Proxy {
    /// `127.0.0.1:PORT`.
    pub host: String,
    pub rules: Arc<Mutex<Vec<Rule>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s, up, me) = (
            rules.clone(),
            seen.clone(),
            upstream.to_string(),
            host.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, s, up, me) = (r.clone(), s.clone(), up.clone(), me.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &me, &r, &s);
                });
            }
        });
        Proxy { host, rules, seen }
    }

    pub fn add(&self, method: &'static str, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            method,
            path_contains: path_contains.to_string(),
            fault,
            times,
        });
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path.contains(path_contains))
            .count()
    }
}

struct Message {
    head: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_message(
    r: &mut impl BufRead,
    is_response_to_head: bool,
) -> std::io::Result<Option<Message>> {
    let mut head = String::new();
    if r.read_line(&mut head)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if !is_response_to_head {
        if let Some(len) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body.resize(len, 0);
            r.read_exact(&mut body)?;
        } else if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("transfer-encoding"));
            headers.push(("Content-Length".into(), body.len().to_string()));
        }
    }
    Ok(Some(Message {
        head,
        headers,
        body,
    }))
}

fn write_message(
    w: &mut impl Write,
    m: &Message,
    body_limit: Option<usize>,
) -> std::io::Result<()> {
    let mut out = m.head.clone();
    for (k, v) in &m.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    let n = body_limit.unwrap_or(m.body.len()).min(m.body.len());
    w.write_all(&m.body[..n])?;
    w.flush()
}

fn serve(
    conn: TcpStream,
    upstream: &str,
    me: &str,
    rules: &Mutex<Vec<Rule>>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    while let Some(mut req) = read_message(&mut reader, false)? {
        let mut parts = req.head.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let authorization = req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization,
        });
        let fault = {
            let mut rules = rules.lock().unwrap();
            let hit = rules
                .iter_mut()
                .find(|r| r.times > 0 && r.method == method && path.contains(&r.path_contains));
            hit.map(|r| {
                r.times = r.times.saturating_sub(1);
                r.fault.clone()
            })
        };
        match &fault {
            Some(Fault::Status(code)) => {
                write!(out, "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\n\r\n")?;
                continue;
            }
            Some(Fault::Redirect(location)) => {
                write!(
                    out,
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                )?;
                continue;
            }
            Some(Fault::Drop) => return Ok(()),
            Some(Fault::Respond(code, challenge, body)) => {
                write!(
                    out,
                    "HTTP/1.1 {code} Injected\r\nWWW-Authenticate: {challenge}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                if method != "HEAD" {
                    out.write_all(body.as_bytes())?;
                }
                continue;
            }
            Some(Fault::RespondAndClear(code)) => {
                rules.lock().unwrap().clear();
                write!(out, "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\n\r\n")?;
                continue;
            }
            Some(Fault::Unauthorized(challenge)) => {
                let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}"#;
                write!(
                    out,
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                continue;
            }
            _ => {}
        }
        // Forward on a fresh upstream connection.
        req.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("connection"));
        req.headers.push(("Connection".into(), "close".into()));
        let mut up = TcpStream::connect(upstream)?;
        write_message(&mut up, &req, None)?;
        let mut up_reader = BufReader::new(up);
        let Some(mut resp) = read_message(&mut up_reader, method == "HEAD")? else {
            return Ok(());
        };
        // Locations point back at the proxy, so that every request passes through it.
        for (k, v) in resp.headers.iter_mut() {
            if k.eq_ignore_ascii_case("location") {
                *v = v.replace(upstream, me);
            }
            if k.eq_ignore_ascii_case("connection") {
                *v = "keep-alive".into();
            }
        }
        match fault {
            Some(Fault::TruncateBody(n)) => {
                write_message(&mut out, &resp, Some(n))?;
                return Ok(());
            }
            Some(Fault::WrongDigest) => {
                for (k, v) in resp.headers.iter_mut() {
                    if k.eq_ignore_ascii_case("docker-content-digest") {
                        *v = format!("sha256:{}", "0".repeat(64));
                    }
                }
            }
            Some(Fault::Corrupt) => {
                if let Some(b) = resp.body.first_mut() {
                    *b ^= 0xff;
                }
            }
            _ => {}
        }
        write_message(&mut out, &resp, None)?;
    }
    Ok(())
}
