//! A minimal HTTP/1.1 file server on 127.0.0.1 for tests, with injectable faults that a
//! real server would not produce (wrong bytes, truncation, 500s).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve these bytes instead of the file.
    Replace(Vec<u8>),
    /// Send the full Content-Length but only this many bytes, then close.
    Truncate(usize),
    /// Answer with this status code, `n` times, then serve normally.
    Status(u16, usize),
}

pub struct Server {
    pub url: String,
    faults: Arc<Mutex<BTreeMap<String, Fault>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Serves `root` until the test process ends.
    pub fn start(root: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let faults: Arc<Mutex<BTreeMap<String, Fault>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, r) = (faults.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, f, r) = (root.clone(), f.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &root, &f, &r);
                });
            }
        });
        Server {
            url,
            faults,
            requests,
        }
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.faults.lock().unwrap().insert(path.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }
}

fn handle(
    mut stream: TcpStream,
    root: &PathBuf,
    faults: &Mutex<BTreeMap<String, Fault>>,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        requests.lock().unwrap().push(path.clone());
        let fault = {
            let mut map = faults.lock().unwrap();
            let f = map.get(&path).cloned();
            if let Some(Fault::Status(code, n)) = f {
                if n <= 1 {
                    map.remove(&path);
                } else {
                    map.insert(path.clone(), Fault::Status(code, n - 1));
                }
            }
            f
        };
        let file = root.join(path.trim_start_matches('/'));
        let body = match (&fault, std::fs::read(&file)) {
            (Some(Fault::Status(code, _)), _) => {
                write!(stream, "HTTP/1.1 {code} Fault\r\nContent-Length: 0\r\n\r\n")?;
                continue;
            }
            (Some(Fault::Replace(bytes)), _) => bytes.clone(),
            (_, Ok(bytes)) => bytes,
            (_, Err(_)) => {
                write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                )?;
                continue;
            }
        };
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        if let Some(Fault::Truncate(n)) = fault {
            stream.write_all(&body[..n.min(body.len())])?;
            return Ok(());
        }
        stream.write_all(&body)?;
    }
}
