//! A keyring file (binary or ASCII-armoured), as a project's spec names one.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_debian::release::parse_keyring(data);
});
