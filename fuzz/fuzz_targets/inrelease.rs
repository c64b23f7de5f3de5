//! An InRelease file as a mirror serves it, checked against the host's Debian archive
//! keyring: the cleartext framing, the signature packets, and the Release fields.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keyring() -> &'static [u8] {
    static KEYRING: OnceLock<Vec<u8>> = OnceLock::new();
    KEYRING.get_or_init(|| {
        std::fs::read("/usr/share/keyrings/debian-archive-keyring.gpg")
            .expect("the host's debian-archive-keyring (apt-get install debian-archive-keyring)")
    })
}

fuzz_target!(|text: &str| {
    let _ = cairn_debian::verify_inrelease(keyring(), text);
    let _ = cairn_debian::Release::parse(text);
    let _ = cairn_debian::release::parse_rfc2822(text);
});
