//! `serve-pxe`: boots the cluster's PXE nodes from the store, with nothing on the network
//! but the LAN. Beside the LAN's own DHCP server it answers as a proxy DHCP (ports 67 and
//! 4011, known MACs only), serves iPXE to PXE ROMs over TFTP (from Debian's `ipxe`
//! package, pinned in the lock through `images/ipxe.toml`), and serves each node's files
//! and its secrets over HTTP under the node's own path.
//!
//! PXE cannot authenticate a machine: anything on the LAN that can send a known MAC, or
//! simply ask for `/<node>/secrets.env`, gets that node's secrets. Serve them only on a
//! network you trust (a separate VLAN for provisioning), and only while a node installs.

use crate::dhcp;
use crate::http::{Log, Server};
use cairn_formats::Digest;
use cairn_inputs::fetch::{Cache, Download};
use cairn_inputs::lockfile::Lockfile;
use cairn_project::Project;
use cairn_steps::{Context, Error};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;

/// The iPXE files served over TFTP, by the name a PXE ROM asks for.
const IPXE_FILES: &[&str] = &[
    "undionly.kpxe",
    "ipxe-amd64.efi",
    "ipxe-arm64.efi",
    "snponly.efi",
];

/// A node to boot.
#[derive(Debug, Clone)]
pub struct PxeNode {
    pub name: String,
    /// `52:54:00:00:10:31`.
    pub mac: String,
    /// The node's files by title, as paths of store blobs.
    pub files: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PxeConfig {
    /// This server's address on the LAN: in the DHCP answers and the URLs.
    pub address: Ipv4Addr,
    pub http_port: u16,
    /// The interface of `address` (found from the address when not given).
    pub interface: Option<String>,
    /// `<node>.env` files served as `/<node>/secrets.env`.
    pub secrets_dir: Option<PathBuf>,
    /// Extra kernel arguments for every node (`cairn-args` in the iPXE script).
    pub kernel_args: String,
}

/// A running PXE server; it stops when the process ends.
pub struct PxeServer {
    pub http: Server,
    pub interface: String,
    pub routes: Vec<String>,
    _scratch: tempfile::TempDir,
}

/// iPXE's boot files from the locked `ipxe` package (fetched into the download cache if
/// it is not there yet).
pub fn ipxe_files(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let spec = project.image("ipxe").ok_or_else(|| {
        Error::msg(
            "serve-pxe takes iPXE from Debian's ipxe package, pinned through images/ipxe.toml: add it (packages = [\"ipxe\"], as the example project does) and run `cargo xtask lock`",
        )
    })?;
    let locked = lock.image_for(spec)?;
    let arch = spec
        .arches
        .first()
        .copied()
        .ok_or_else(|| Error::msg("images/ipxe.toml names no arch"))?;
    let package = lock
        .packages(locked, arch)?
        .into_iter()
        .find(|p| p.name == "ipxe")
        .ok_or_else(|| Error::msg("images/ipxe.toml: the lock holds no package ipxe"))?
        .clone();
    let sha =
        Digest::from_hex(&package.sha256).map_err(|e| Error::at("inputs.lock: package ipxe", e))?;
    let cache = Cache::new(&ctx.cache);
    if !cache.has(&sha) {
        let mirror = cairn_inputs::mirror::resolve(spec.mirror.as_deref())?;
        cache.fetch_all(
            &[Download {
                name: format!("ipxe {}", package.version),
                url: format!("{mirror}/{}", package.path),
                sha256: sha,
                size: Some(package.size),
            }],
            ctx.progress,
        )?;
    }
    let deb = std::fs::File::open(cache.path(&sha))
        .map_err(|e| Error::at(format!("{}", cache.path(&sha).display()), e))?;
    let mut out = BTreeMap::new();
    cairn_debian::deb::unpack_data(deb, "ipxe", |entry, data| {
        if let Some(name) = entry.path.strip_prefix("usr/lib/ipxe/") {
            if IPXE_FILES.contains(&name) {
                let mut bytes = Vec::new();
                data.read_to_end(&mut bytes)?;
                if !bytes.is_empty() {
                    out.insert(name.to_string(), bytes);
                }
            }
        }
        Ok(())
    })?;
    for name in ["undionly.kpxe", "ipxe-amd64.efi"] {
        if !out.contains_key(name) {
            return Err(Error::msg(format!(
                "the locked ipxe package {} has no /usr/lib/ipxe/{name}",
                package.version
            )));
        }
    }
    Ok(out)
}

/// The name of the interface that holds `address`.
fn interface_of(address: Ipv4Addr) -> Option<String> {
    let mut found = None;
    // SAFETY: getifaddrs fills a list we only read and then free.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == address {
                    found = Some(
                        std::ffi::CStr::from_ptr(ifa.ifa_name)
                            .to_string_lossy()
                            .into_owned(),
                    );
                    break;
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// A UDP socket on `port` of every address, broadcasting through `interface` only.
fn udp_socket(port: u16, interface: &str, what: &str) -> Result<UdpSocket, Error> {
    let socket = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => Error::msg(format!(
            "port {port} ({what}) is taken: another DHCP server, proxy or TFTP server runs on this host (dnsmasq?); stop it, or run serve-pxe on another host of the LAN"
        )),
        std::io::ErrorKind::PermissionDenied => Error::msg(format!(
            "port {port} ({what}) needs root (or CAP_NET_BIND_SERVICE)"
        )),
        _ => Error::at(format!("port {port} ({what})"), e),
    })?;
    socket
        .set_broadcast(true)
        .map_err(|e| Error::at(format!("port {port}"), e))?;
    use std::os::fd::AsRawFd;
    let name = std::ffi::CString::new(interface).map_err(|e| Error::other(e))?;
    // SAFETY: a valid fd and a NUL-terminated name of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.as_bytes_with_nul().len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(Error::msg(format!(
            "port {port}: cannot bind to interface {interface}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(socket)
}

/// Starts HTTP, proxy DHCP and TFTP for `nodes`; `log` gets one line per request.
pub fn serve_pxe(
    nodes: &[PxeNode],
    ipxe: BTreeMap<String, Vec<u8>>,
    config: &PxeConfig,
    log: Log,
) -> Result<PxeServer, Error> {
    if nodes.is_empty() {
        return Err(Error::msg(
            "no PXE node to serve: give nodes with `boot = \"pxe\"` and a MAC in nodes/",
        ));
    }
    let interface = match &config.interface {
        Some(i) => i.clone(),
        None => interface_of(config.address).ok_or_else(|| {
            Error::msg(format!(
                "no interface of this host has the address {}: pass --listen with one of this host's addresses on the LAN",
                config.address
            ))
        })?,
    };
    let scratch = tempfile::tempdir().map_err(|e| Error::other(e))?;
    let base = format!("http://{}:{}", config.address, config.http_port);
    let mut routes = BTreeMap::new();
    let mut boot_files: BTreeMap<String, String> = BTreeMap::new();
    for node in nodes {
        for (title, path) in &node.files {
            if title != "boot.ipxe" {
                routes.insert(format!("/{}/{title}", node.name), path.clone());
            }
        }
        // The entry point iPXE is sent to: this node's base URL and kernel arguments, then
        // the node's own script for its MAC.
        let script = format!(
            "#!ipxe\n# Cairn serve-pxe: node {name}\nset base-url {base}/{name}\nset cairn-args {args}\nchain ${{base-url}}/{mac}.ipxe\n",
            name = node.name,
            args = config.kernel_args,
            mac = node.mac.replace(':', "-"),
        );
        let file = scratch.path().join(format!("{}.boot.ipxe", node.name));
        std::fs::write(&file, script).map_err(|e| Error::other(e))?;
        routes.insert(format!("/{}/boot.ipxe", node.name), file);
        if let Some(dir) = &config.secrets_dir {
            let secrets = dir.join(format!("{}.env", node.name));
            if secrets.is_file() {
                routes.insert(format!("/{}/secrets.env", node.name), secrets);
            }
        }
        let boot_file = format!("{base}/{}/boot.ipxe", node.name);
        if boot_file.len() > dhcp::MAX_BOOT_FILE {
            return Err(Error::msg(format!(
                "{boot_file} is longer than the {} bytes a DHCP answer holds: use a shorter node name",
                dhcp::MAX_BOOT_FILE
            )));
        }
        boot_files.insert(node.mac.to_ascii_lowercase(), boot_file);
    }
    let bind = format!("{}:{}", config.address, config.http_port);
    let http = crate::http::serve_logged(&bind, routes.clone(), Some(log.clone()))?;

    let tftp_socket = udp_socket(69, &interface, "TFTP")?;
    let dhcp_socket = udp_socket(67, &interface, "proxy DHCP")?;
    let proxy_socket = udp_socket(4011, &interface, "PXE proxy DHCP requests")?;
    let files = Arc::new(ipxe);
    let tftp_log = log.clone();
    let local = std::net::IpAddr::V4(config.address);
    std::thread::spawn(move || crate::tftp::serve(local, tftp_socket, files, tftp_log));

    let address = config.address;
    for (socket, port) in [(dhcp_socket, 67u16), (proxy_socket, 4011)] {
        let boot_files = boot_files.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Some(m) = dhcp::parse(&buf[..n]) else {
                    continue;
                };
                if m.op != 1 || !m.is_pxe_client() {
                    continue;
                }
                let (kind, answer) = match (port, m.message_type()) {
                    (67, Some(dhcp::DISCOVER)) => ("DISCOVER", dhcp::OFFER),
                    (4011, Some(dhcp::REQUEST)) => ("REQUEST", dhcp::ACK),
                    _ => continue,
                };
                let Some(script) = boot_files.get(&m.mac()) else {
                    log(format!(
                        "dhcp {} {kind}: not a PXE node here, ignored",
                        m.mac()
                    ));
                    continue;
                };
                let file = if m.is_ipxe() {
                    script.clone()
                } else {
                    dhcp::rom_boot_file(m.client_arch()).to_string()
                };
                let reply = dhcp::reply(&m, answer, address, &file);
                let to: SocketAddr = if port == 67 || m.ciaddr.is_unspecified() {
                    SocketAddr::from((Ipv4Addr::BROADCAST, 68))
                } else {
                    peer
                };
                match socket.send_to(&reply, to) {
                    Ok(_) => log(format!(
                        "dhcp {} {kind} ({}) -> {file}",
                        m.mac(),
                        if m.is_ipxe() { "iPXE" } else { "PXE ROM" }
                    )),
                    Err(e) => log(format!("dhcp {} {kind}: cannot answer: {e}", m.mac())),
                }
            }
        });
    }
    Ok(PxeServer {
        http,
        interface,
        routes: routes.keys().cloned().collect(),
        _scratch: scratch,
    })
}
