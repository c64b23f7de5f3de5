//! The x86_64 PXE bundle's iPXE scripts. A node's script is named by its MAC (as matchbox
//! does) and loads the kernel and initramfs over HTTP; the initramfs then fetches the root
//! squashfs from the same place. Every URL is relative to `${base-url}`, which the
//! bootstrap script (or the PXE server's DHCP answer) sets, so the bundle does not depend
//! on the server's address. The root's sha256 is on the kernel command line: the
//! initramfs refuses a squashfs that does not match. So is `cairn.secrets=` with the
//! node's own `${base-url}/secrets.env`: the initramfs fetches it (a 404 means none) into
//! /run/cairn, never onto a disk.

use cairn_formats::Digest;
use cairn_project::{MacAddress, NodeSpec};

/// The node-independent bootstrap: chain to the script of this machine's MAC.
pub const CHAIN_SCRIPT: &str = include_str!("files/chain.ipxe");

/// Kernel arguments of a PXE-booted node (the root URL is added by the script).
pub fn cmdline() -> String {
    "console=tty0 console=ttyS0,115200".to_string()
}

/// `52-54-00-00-10-31.ipxe`: iPXE's `${net0/mac:hexhyp}`.
pub fn script_name(mac: &MacAddress) -> String {
    format!("{}.ipxe", mac.to_string().replace(':', "-"))
}

/// The iPXE script of one node.
pub fn node_script(
    node: &NodeSpec,
    node_id: &Digest,
    mac: &MacAddress,
    cmdline: &str,
    root: &Digest,
) -> String {
    format!(
        "#!ipxe\n\
         # Cairn node {name} (node id {id})\n\
         iseq ${{net0/mac}} {mac} || goto wrong_mac\n\
         isset ${{base-url}} || set base-url ${{cwduri}}\n\
         echo cairn: booting {name} from ${{base-url}}\n\
         kernel ${{base-url}}/vmlinuz initrd=initrd.img {cmdline} cairn.root=${{base-url}}/root.squashfs cairn.root.sha256={root_hex} cairn.secrets=${{base-url}}/secrets.env ${{cairn-args}}\n\
         initrd ${{base-url}}/initrd.img\n\
         boot\n\
         :wrong_mac\n\
         echo cairn: this script is for {name} ({mac}), not ${{net0/mac}}\n\
         exit 1\n",
        name = node.name,
        id = node_id.hex(),
        root_hex = root.hex(),
    )
}
