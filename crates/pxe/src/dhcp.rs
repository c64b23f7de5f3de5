//! Proxy DHCP (the PXE specification's ProxyDHCP, as dnsmasq's `dhcp-range=...,proxy`):
//! answers a PXE client's DHCPDISCOVER on port 67 and its DHCPREQUEST on port 4011 with boot
//! information only, never an address, so the LAN's own DHCP server keeps handing those
//! out. Only MACs of known nodes are answered; every other machine boots as it would
//! without Cairn.
//!
//! What a client is told to load depends on what it is: iPXE (user class `iPXE`) gets the
//! node's HTTP boot script; a BIOS PXE ROM gets `undionly.kpxe` over TFTP; a UEFI one the
//! EFI iPXE of its architecture (RFC 4578 option 93).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_VENDOR_CLASS: u8 = 60;
const OPT_VENDOR_SPECIFIC: u8 = 43;
const OPT_USER_CLASS: u8 = 77;
const OPT_CLIENT_ARCH: u8 = 93;
const OPT_CLIENT_UUID: u8 = 97;
const OPT_END: u8 = 255;
pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;

/// The parts of a DHCP message a proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: [u8; 4],
    pub flags: [u8; 2],
    pub ciaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub options: BTreeMap<u8, Vec<u8>>,
}

impl Message {
    pub fn message_type(&self) -> Option<u8> {
        self.options
            .get(&OPT_MESSAGE_TYPE)
            .and_then(|v| v.first().copied())
    }

    /// A PXE client says so in its vendor class (`PXEClient:Arch:...`).
    pub fn is_pxe_client(&self) -> bool {
        self.options
            .get(&OPT_VENDOR_CLASS)
            .is_some_and(|v| v.starts_with(b"PXEClient"))
    }

    /// iPXE sends user class `iPXE`.
    pub fn is_ipxe(&self) -> bool {
        self.options
            .get(&OPT_USER_CLASS)
            .is_some_and(|v| v.windows(4).any(|w| w == b"iPXE"))
    }

    /// RFC 4578 client system architecture: 0 BIOS, 7 and 9 x86-64 UEFI, 11 ARM64 UEFI.
    pub fn client_arch(&self) -> u16 {
        self.options
            .get(&OPT_CLIENT_ARCH)
            .filter(|v| v.len() >= 2)
            .map_or(0, |v| u16::from_be_bytes([v[0], v[1]]))
    }

    pub fn mac(&self) -> String {
        self.chaddr
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Parses a BOOTP/DHCP packet; `None` for anything that is not one.
pub fn parse(packet: &[u8]) -> Option<Message> {
    if packet.len() < 240 || packet[1] != 1 || packet[2] != 6 || packet[236..240] != MAGIC {
        return None;
    }
    let mut options = BTreeMap::new();
    let mut i = 240;
    while i < packet.len() {
        let code = packet[i];
        match code {
            0 => i += 1,
            OPT_END => break,
            _ => {
                let len = *packet.get(i + 1)? as usize;
                let value = packet.get(i + 2..i + 2 + len)?;
                options
                    .entry(code)
                    .or_insert_with(Vec::new)
                    .extend_from_slice(value);
                i += 2 + len;
            }
        }
    }
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&packet[28..34]);
    Some(Message {
        op: packet[0],
        xid: packet[4..8].try_into().ok()?,
        flags: packet[10..12].try_into().ok()?,
        ciaddr: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        chaddr,
        options,
    })
}

/// The proxy's answer to `request` (an OFFER to a DISCOVER, an ACK to a REQUEST): no
/// address, the server as next server and server identifier, and the boot file.
pub fn reply(request: &Message, kind: u8, server: Ipv4Addr, boot_file: &str) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 2; // BOOTREPLY
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&request.xid);
    p[10..12].copy_from_slice(&request.flags);
    p[12..16].copy_from_slice(&request.ciaddr.octets());
    p[20..24].copy_from_slice(&server.octets()); // siaddr: the TFTP server
    p[28..34].copy_from_slice(&request.chaddr);
    let file = boot_file.as_bytes();
    p[108..108 + file.len().min(127)].copy_from_slice(&file[..file.len().min(127)]);
    p[236..240].copy_from_slice(&MAGIC);
    let mut option = |code: u8, value: &[u8]| {
        p.push(code);
        p.push(value.len() as u8);
        p.extend_from_slice(value);
    };
    option(OPT_MESSAGE_TYPE, &[kind]);
    option(OPT_SERVER_ID, &server.octets());
    option(OPT_VENDOR_CLASS, b"PXEClient");
    if let Some(uuid) = request
        .options
        .get(&OPT_CLIENT_UUID)
        .filter(|u| u.len() == 17)
    {
        option(OPT_CLIENT_UUID, uuid);
    }
    // PXE_DISCOVERY_CONTROL = 8: boot the file named here, no boot server discovery.
    option(OPT_VENDOR_SPECIFIC, &[6, 1, 8, OPT_END]);
    p.push(OPT_END);
    p
}

/// The longest boot file name the BOOTP `file` field holds.
pub const MAX_BOOT_FILE: usize = 127;

/// The TFTP file for a PXE ROM of architecture `arch` (RFC 4578).
pub fn rom_boot_file(arch: u16) -> &'static str {
    match arch {
        7 | 9 => "ipxe-amd64.efi",
        11 => "ipxe-arm64.efi",
        _ => "undionly.kpxe",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover(user_class: Option<&[u8]>, arch: u16) -> Vec<u8> {
        let mut p = vec![0u8; 240];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&[1, 2, 3, 4]);
        p[10] = 0x80;
        p[28..34].copy_from_slice(&[0x52, 0x54, 0, 0, 0x10, 0x31]);
        p[236..240].copy_from_slice(&MAGIC);
        p.extend([OPT_MESSAGE_TYPE, 1, DISCOVER]);
        let class = b"PXEClient:Arch:00000:UNDI:002001";
        p.extend([OPT_VENDOR_CLASS, class.len() as u8]);
        p.extend(class);
        p.extend([OPT_CLIENT_ARCH, 2]);
        p.extend(arch.to_be_bytes());
        p.extend([OPT_CLIENT_UUID, 17, 0]);
        p.extend([7u8; 16]);
        if let Some(u) = user_class {
            p.extend([OPT_USER_CLASS, u.len() as u8]);
            p.extend(u);
        }
        p.push(OPT_END);
        p
    }

    #[test]
    fn a_pxe_discover_gets_a_proxy_offer_with_no_address() {
        let m = parse(&discover(Some(b"iPXE"), 0)).unwrap();
        assert_eq!(m.message_type(), Some(DISCOVER));
        assert!(m.is_pxe_client() && m.is_ipxe());
        assert_eq!(m.mac(), "52:54:00:00:10:31");
        let server = Ipv4Addr::new(10, 0, 10, 2);
        let r = reply(&m, OFFER, server, "http://10.0.10.2:8080/x/boot.ipxe");
        let back = parse(&r).unwrap();
        assert_eq!(back.op, 2);
        assert_eq!(back.xid, [1, 2, 3, 4]);
        assert_eq!(back.flags, [0x80, 0]);
        assert_eq!(&r[16..20], &[0, 0, 0, 0], "yiaddr: no address");
        assert_eq!(&r[20..24], &[10, 0, 10, 2], "siaddr");
        assert_eq!(back.message_type(), Some(OFFER));
        assert_eq!(back.options[&OPT_SERVER_ID], vec![10, 0, 10, 2]);
        assert_eq!(back.options[&OPT_VENDOR_CLASS], b"PXEClient");
        assert_eq!(back.options[&OPT_CLIENT_UUID].len(), 17);
        assert!(r[108..].starts_with(b"http://10.0.10.2:8080/x/boot.ipxe\0"));
    }

    #[test]
    fn roms_get_the_ipxe_of_their_architecture() {
        let bios = parse(&discover(None, 0)).unwrap();
        assert!(!bios.is_ipxe());
        assert_eq!(rom_boot_file(bios.client_arch()), "undionly.kpxe");
        assert_eq!(
            rom_boot_file(parse(&discover(None, 7)).unwrap().client_arch()),
            "ipxe-amd64.efi"
        );
        assert_eq!(rom_boot_file(11), "ipxe-arm64.efi");
        assert!(parse(&[0u8; 100]).is_none());
    }
}
