//! A .deb as a mirror (or a tampered cache) hands it over: the ar reader, control.tar and
//! the data.tar walk with its path checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Read;

fuzz_target!(|data: &[u8]| {
    let mut seen = 0u64;
    let _ = cairn_debian::unpack_data(data, "fuzz", |entry, r| {
        // What the walk accepted is a relative path that stays inside the root.
        assert!(!entry.path.starts_with('/') && !entry.path.split('/').any(|c| c == ".."));
        seen += std::io::copy(&mut r.take(1 << 24), &mut std::io::sink())?;
        Ok(())
    });
});
