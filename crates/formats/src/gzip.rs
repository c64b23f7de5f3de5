//! Deterministic gzip: no file name, mtime 0, OS byte 255, fixed level, one fixed backend.
//!
//! The backend is zlib-rs, chosen explicitly in Cargo.toml: flate2's output bytes differ
//! between backends, so a backend change is a change of every layer digest (the golden
//! test below catches it).

use flate2::{Compression, GzBuilder};
use std::io::Write;

/// The compression level of every layer Cairn writes.
pub const LEVEL: u32 = 6;

pub type GzipWriter<W> = flate2::write::GzEncoder<W>;

pub fn writer<W: Write>(inner: W) -> GzipWriter<W> {
    GzBuilder::new().mtime(0).operating_system(255).write(inner, Compression::new(LEVEL))
}

/// Compresses `data` in one call (small inputs and tests).
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut w = writer(Vec::new());
    w.write_all(data).expect("writing to a Vec cannot fail");
    w.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;
    use std::io::Read;

    #[test]
    fn header_has_no_name_no_time_unknown_os() {
        let out = compress(b"hello");
        assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn golden_bytes() {
        let out = compress(b"cairn cairn cairn cairn\n");
        assert_eq!(hex::encode(&out), "1f8b08000000000000ff4b4ecc2cca53484627b9009b1dbbdf18000000");
        let big: Vec<u8> = (0..1_000_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        assert_eq!(Digest::of(&compress(&big)).to_string(), "sha256:6c3fd3a2d6789f023bab4a2f74bc8897098f18b0dcc9cf5a89cff022cc7a1030");
    }

    #[test]
    fn round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compress(&data)[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
