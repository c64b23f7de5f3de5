//! Validated value types. Each checks itself while deserialising, so a bad value is reported
//! by the TOML parser with its exact position.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

macro_rules! string_value {
    ($ty:ident) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(D::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// A node or image architecture as Cairn names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Armv7,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Armv7, Arch::Aarch64];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Armv7 => "armv7",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name for the architecture.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Armv7 => "armhf",
            Arch::Aarch64 => "arm64",
        }
    }

    /// OCI platform architecture and variant.
    pub fn oci(self) -> (&'static str, Option<&'static str>) {
        match self {
            Arch::X86_64 => ("amd64", None),
            Arch::Armv7 => ("arm", Some("v7")),
            Arch::Aarch64 => ("arm64", None),
        }
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        match s {
            "x86_64" => Ok(Arch::X86_64),
            "armv7" => Ok(Arch::Armv7),
            "aarch64" => Ok(Arch::Aarch64),
            other => {
                let hint = match other {
                    "amd64" | "x86-64" | "x64" => " (Cairn calls it `x86_64`)",
                    "arm64" => " (Cairn calls it `aarch64`)",
                    "armhf" | "arm" | "armv7l" => " (Cairn calls it `armv7`)",
                    _ => "",
                };
                Err(format!(
                    "unknown arch {other:?}, expected one of x86_64, armv7, aarch64{hint}"
                ))
            }
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

string_value!(Arch);

/// An RFC 1123 host name: labels of 1-63 letters, digits and `-`, not starting or ending
/// with `-`, 253 characters at most.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = String;
    fn from_str(s: &str) -> Result<Hostname, String> {
        let bad = |why: &str| Err(format!("invalid host name {s:?}: {why} (RFC 1123)"));
        if s.is_empty() {
            return bad("empty");
        }
        if s.len() > 253 {
            return bad("longer than 253 characters");
        }
        for label in s.split('.') {
            if label.is_empty() {
                return bad("empty label");
            }
            if label.len() > 63 {
                return bad("a label is longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return bad("only letters, digits, `-` and `.` are allowed");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return bad("a label starts or ends with `-`");
            }
        }
        Ok(Hostname(s.to_string()))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(Hostname);

/// An address with a prefix length, `10.0.0.5/24` or `fd00::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether the address has no bits set past the prefix (a network, not a host address).
    pub fn is_network(&self) -> bool {
        match self.address {
            IpAddr::V4(a) => self.prefix == 32 || u32::from(a) & (u32::MAX >> self.prefix) == 0,
            IpAddr::V6(a) => self.prefix == 128 || u128::from(a) & (u128::MAX >> self.prefix) == 0,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = |why: String| {
            Err(format!(
                "invalid CIDR {s:?}: {why}, expected e.g. 10.0.0.0/24"
            ))
        };
        let Some((addr, prefix)) = s.split_once('/') else {
            return bad("missing `/prefix`".into());
        };
        let address: IpAddr = match addr.parse() {
            Ok(a) => a,
            Err(_) => return bad(format!("{addr:?} is not an IP address")),
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        let digits_ok =
            !prefix.is_empty() && prefix.len() <= 3 && prefix.bytes().all(|b| b.is_ascii_digit());
        match prefix.parse::<u8>() {
            Ok(prefix) if digits_ok && prefix <= max => Ok(Cidr { address, prefix }),
            _ => bad(format!("prefix {prefix:?} is not a number from 0 to {max}")),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

string_value!(Cidr);

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` (lowercased when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl FromStr for MacAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<MacAddress, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let mut out = [0u8; 6];
        if parts.len() != 6 {
            return Err(format!(
                "invalid MAC address {s:?}, expected six hex pairs like dc:a6:32:01:02:03"
            ));
        }
        for (i, part) in parts.iter().enumerate() {
            if part.len() != 2 {
                return Err(format!(
                    "invalid MAC address {s:?}, expected six hex pairs like dc:a6:32:01:02:03"
                ));
            }
            out[i] = u8::from_str_radix(part, 16).map_err(|_| {
                format!("invalid MAC address {s:?}, expected six hex pairs like dc:a6:32:01:02:03")
            })?;
        }
        Ok(MacAddress(out))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

string_value!(MacAddress);

/// File permission bits, written as an octal string (`"0644"`, `"4755"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mode(pub u32);

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(Mode(m)),
            _ => Err(format!(
                "invalid mode {s:?}, expected an octal string like \"0644\" or \"0755\""
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

string_value!(Mode);

/// The name of an image or node: lowercase letters, digits and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Name, String> {
        let ok = s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.ends_with('-');
        if ok {
            Ok(Name(s.to_string()))
        } else {
            Err(format!(
                "invalid name {s:?}: use lowercase letters, digits and `-`, starting with a letter"
            ))
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(Name);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["pi-worker", "a", "node1.homelab.lan", "X86-storage"] {
            assert!(ok.parse::<Hostname>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-pi",
            "pi-",
            "pi_worker",
            "a..b",
            &"a".repeat(64),
            "pi worker",
        ] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.244.0.0/16".parse().unwrap();
        assert!(c.is_network());
        assert!(c.contains("10.244.3.4".parse().unwrap()));
        assert!(!c.contains("10.245.0.1".parse().unwrap()));
        assert!(!"10.0.0.5/24".parse::<Cidr>().unwrap().is_network());
        assert!("fd00::/8".parse::<Cidr>().is_ok());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "x/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_modes_names_arches() {
        assert_eq!(
            "DC:A6:32:01:02:03"
                .parse::<MacAddress>()
                .unwrap()
                .to_string(),
            "dc:a6:32:01:02:03"
        );
        assert!("dc:a6:32:01:02".parse::<MacAddress>().is_err());
        assert_eq!("4755".parse::<Mode>().unwrap().0, 0o4755);
        assert!("0999".parse::<Mode>().is_err());
        assert!("17777".parse::<Mode>().is_err());
        assert!("Haproxy".parse::<Name>().is_err());
        assert!("arm64".parse::<Arch>().unwrap_err().contains("aarch64"));
        assert_eq!(Arch::Armv7.debian(), "armhf");
    }
}
