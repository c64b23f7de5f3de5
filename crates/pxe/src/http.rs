//! A small HTTP/1.1 file server (GET and HEAD, single byte ranges) for PXE boots: iPXE
//! fetches the kernel and initramfs from it, Cairn's initramfs the root squashfs. Files
//! are served from the store by name; nothing else on disk is reachable.

use cairn_steps::Error;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A running server; it stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// One line per request, for an access log.
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

/// Serves `routes` (URL path such as `/x86-storage/vmlinuz` to file) on `bind`
/// (e.g. `127.0.0.1:0`), one thread per connection.
pub fn serve(bind: &str, routes: BTreeMap<String, PathBuf>) -> Result<Server, Error> {
    serve_logged(bind, routes, None)
}

/// [`serve`], with a line per request (`http PEER GET /path 200 BYTES`) given to `log`.
pub fn serve_logged(
    bind: &str,
    routes: BTreeMap<String, PathBuf>,
    log: Option<Log>,
) -> Result<Server, Error> {
    let listener = TcpListener::bind(bind).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            Error::msg(format!(
                "listening on {bind}: the port is taken by another program: stop it or choose another port"
            ))
        } else {
            Error::at(format!("listening on {bind}"), e)
        }
    })?;
    let addr = listener.local_addr().map_err(|e| Error::other(e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let routes = Arc::new(routes);
    let stopping = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let routes = routes.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = handle(conn, &routes, log.as_ref());
            });
        }
    });
    Ok(Server { addr, stop })
}

fn handle(
    conn: TcpStream,
    routes: &BTreeMap<String, PathBuf>,
    log: Option<&Log>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let peer = conn
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.ip().to_string());
    let log = |line: String| {
        if let Some(log) = log {
            log(format!("http {peer} {line}"));
        }
    };
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut range = None;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim();
                if k == "range" {
                    range = parse_range(v);
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = normalize(target.split('?').next().unwrap_or(""));
        let file = routes.get(&path).and_then(|p| std::fs::File::open(p).ok());
        match (method, file) {
            ("GET" | "HEAD", Some(mut f)) => {
                let len = f.metadata()?.len();
                let (status, start, end) = match range {
                    Some((a, b)) if a < len && b.is_none_or(|b| b >= a) => {
                        (206, a, b.map_or(len - 1, |b| b.min(len - 1)))
                    }
                    Some(_) => {
                        write!(
                            out,
                            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                        )?;
                        log(format!("{method} {path} 416"));
                        if close {
                            return Ok(());
                        }
                        continue;
                    }
                    None => (200, 0, len.saturating_sub(1)),
                };
                let n = if len == 0 { 0 } else { end - start + 1 };
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Length: {n}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n",
                    if status == 206 {
                        "Partial Content"
                    } else {
                        "OK"
                    }
                );
                if status == 206 {
                    head.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
                }
                head.push_str("\r\n");
                out.write_all(head.as_bytes())?;
                if method == "GET" {
                    f.seek(SeekFrom::Start(start))?;
                    std::io::copy(&mut (&mut f).take(n), &mut out)?;
                }
                log(format!("{method} {path} {status} {n}"));
            }
            ("GET" | "HEAD", None) => {
                let body = format!("not found: {path}\n");
                write!(
                    out,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                    body.len()
                )?;
                if method == "GET" {
                    out.write_all(body.as_bytes())?;
                }
                log(format!("{method} {path} 404"));
            }
            _ => {
                write!(
                    out,
                    "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n\r\n"
                )?;
            }
        }
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// `/a//b/./c` to `/a/b/c`; `..` is refused by mapping to an unroutable path.
fn normalize(path: &str) -> String {
    let mut parts = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => return "/..".into(),
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let spec = v.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse().ok()?)
    };
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_and_ranges_parse() {
        assert_eq!(normalize("/a//b/./c"), "/a/b/c");
        assert_eq!(normalize("/a/../etc/passwd"), "/..");
        assert_eq!(parse_range("bytes=10-"), Some((10, None)));
        assert_eq!(parse_range("bytes=0-99"), Some((0, Some(99))));
        assert_eq!(parse_range("items=0-1"), None);
    }

    #[test]
    fn serves_files_ranges_and_404() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        let server = serve(
            "127.0.0.1:0",
            BTreeMap::from([("/n/f".to_string(), file.clone())]),
        )
        .unwrap();
        let get = |req: &str| {
            let mut c = TcpStream::connect(server.addr).unwrap();
            c.write_all(req.as_bytes()).unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        };
        let full = get("GET /n//f HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n"), "{full}");
        assert!(full.ends_with("\r\n\r\n0123456789"), "{full}");
        let part = get("GET /n/f HTTP/1.1\r\nRange: bytes=3-5\r\nConnection: close\r\n\r\n");
        assert!(part.contains("206") && part.contains("Content-Range: bytes 3-5/10"));
        assert!(part.ends_with("345"), "{part}");
        let reversed = get("GET /n/f HTTP/1.1\r\nRange: bytes=5-3\r\nConnection: close\r\n\r\n");
        assert!(reversed.starts_with("HTTP/1.1 416"), "{reversed}");
        let missing = get("GET /n/../f HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
