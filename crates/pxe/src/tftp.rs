//! A read-only TFTP server (RFC 1350, with the blksize and tsize options of RFC 2347-2349)
//! for the few files a PXE ROM loads before iPXE runs: files are served from memory by
//! name; nothing on disk is reachable and writes are refused.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;
const TRIES: u32 = 5;

fn error_packet(code: u16, message: &str) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(ERROR.to_be_bytes());
    p.extend(code.to_be_bytes());
    p.extend(message.as_bytes());
    p.push(0);
    p
}

/// A read request: file name and options (lowercased names).
fn parse_rrq(packet: &[u8]) -> Option<(String, BTreeMap<String, String>)> {
    if packet.len() < 4 || u16::from_be_bytes([packet[0], packet[1]]) != RRQ {
        return None;
    }
    let mut fields = packet[2..]
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let name = fields.next()?;
    let _mode = fields.next()?;
    let mut options = BTreeMap::new();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        if k.is_empty() {
            break;
        }
        options.insert(k.to_ascii_lowercase(), v);
    }
    Some((name, options))
}

/// Sends `data` to `peer` from a fresh socket on `local` (the address the client asked),
/// block by block, each acknowledged.
fn transfer(
    local: std::net::IpAddr,
    peer: SocketAddr,
    data: &[u8],
    options: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let socket = UdpSocket::bind((local, 0))?;
    socket.connect(peer)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut block_size = 512usize;
    let mut oack = Vec::new();
    if let Some(size) = options.get("blksize").and_then(|v| v.parse::<usize>().ok()) {
        block_size = size.clamp(8, 1468);
        oack.push(("blksize", block_size.to_string()));
    }
    if options.contains_key("tsize") {
        oack.push(("tsize", data.len().to_string()));
    }
    let mut buf = [0u8; 1500];
    let mut send_and_wait = |packet: &[u8], block: u16| -> std::io::Result<bool> {
        for _ in 0..TRIES {
            socket.send(packet)?;
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) if n >= 4 => {
                        let op = u16::from_be_bytes([buf[0], buf[1]]);
                        let acked = u16::from_be_bytes([buf[2], buf[3]]);
                        if op == ACK && acked == block {
                            return Ok(true);
                        }
                        if op == ERROR {
                            return Ok(false);
                        }
                    }
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(false)
    };
    if !oack.is_empty() {
        let mut p = OACK.to_be_bytes().to_vec();
        for (k, v) in &oack {
            p.extend(k.as_bytes());
            p.push(0);
            p.extend(v.as_bytes());
            p.push(0);
        }
        if !send_and_wait(&p, 0)? {
            return Ok(());
        }
    }
    let mut block: u16 = 1;
    let mut offset = 0;
    loop {
        let end = (offset + block_size).min(data.len());
        let mut p = DATA.to_be_bytes().to_vec();
        p.extend(block.to_be_bytes());
        p.extend(&data[offset..end]);
        if !send_and_wait(&p, block)? {
            return Ok(());
        }
        if end - offset < block_size {
            return Ok(());
        }
        offset = end;
        block = block.wrapping_add(1);
    }
}

/// Serves `files` on `socket` until the process ends, each transfer from `local` (the
/// server's address, so replies come from where the client sent); `log` gets one line per
/// request.
pub fn serve(
    local: std::net::IpAddr,
    socket: UdpSocket,
    files: Arc<BTreeMap<String, Vec<u8>>>,
    log: Arc<dyn Fn(String) + Send + Sync>,
) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some((name, options)) = parse_rrq(&buf[..n]) else {
            let _ = socket.send_to(&error_packet(4, "only read requests are served"), peer);
            continue;
        };
        let key = name.trim_start_matches('/').to_string();
        match files.get(&key) {
            Some(_) => {
                log(format!("tftp {peer} {name} sending"));
                let files = files.clone();
                std::thread::spawn(move || {
                    let _ = transfer(local, peer, &files[&key], &options);
                });
            }
            None => {
                log(format!("tftp {peer} {name} not found"));
                let _ = socket.send_to(&error_packet(1, "file not found"), peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_requests_parse_with_options() {
        let p = b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001428\x00tsize\x000\x00";
        let (name, options) = parse_rrq(p).unwrap();
        assert_eq!(name, "undionly.kpxe");
        assert_eq!(options["blksize"], "1428");
        assert_eq!(options["tsize"], "0");
        assert!(
            parse_rrq(b"\x00\x02x\x00octet\x00").is_none(),
            "writes are not reads"
        );
    }

    #[test]
    fn a_file_goes_over_loopback_block_by_block() {
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let files = Arc::new(BTreeMap::from([("f".to_string(), data.clone())]));
        std::thread::spawn(move || serve([127, 0, 0, 1].into(), server, files, Arc::new(|_| {})));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"\x00\x01f\x00octet\x00", addr).unwrap();
        let mut got: Vec<u8> = Vec::new();
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), DATA);
            got.extend(&buf[4..n]);
            client.send_to(&[0, 4, buf[2], buf[3]], from).unwrap();
            if n - 4 < 512 {
                break;
            }
        }
        assert_eq!(got, data);
    }
}
