//! Deterministic gzip: no file name, mtime 0, OS byte 255, fixed level, one fixed backend.
//!
//! The backend is zlib-rs, chosen explicitly in Cargo.toml: flate2's output bytes differ
//! between backends, so a backend change is a change of every layer digest (the golden
//! test below catches it).

use flate2::{Compression, GzBuilder};
use std::io::{self, Write};

/// The compression level of every layer Cairn writes.
pub const LEVEL: u32 = 6;

/// Input is handed to the compressor in blocks of exactly this size (the last one
/// shorter): zlib-rs, like zlib-ng, picks different matches depending on how much input
/// each call offers, so without this the bytes would depend on the caller's write sizes.
pub const BLOCK: usize = 1 << 20;

/// A gzip writer whose output depends only on the bytes written, never on how the writes
/// were split.
pub struct GzipWriter<W: Write> {
    encoder: flate2::write::GzEncoder<W>,
    block: Vec<u8>,
}

pub fn writer<W: Write>(inner: W) -> GzipWriter<W> {
    GzipWriter {
        encoder: GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(inner, Compression::new(LEVEL)),
        block: Vec::with_capacity(BLOCK),
    }
}

impl<W: Write> GzipWriter<W> {
    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() {
            self.encoder.write_all(&self.block)?;
        }
        self.encoder.finish()
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (BLOCK - self.block.len()).min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == BLOCK {
                self.encoder.write_all(&self.block)?;
                self.block.clear();
            }
        }
        Ok(n)
    }

    /// Compressed output stays pending until a block is full or `finish`: flushing the
    /// encoder early would change the bytes.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
    use std::io::{Read, Write};

    #[test]
    fn header_has_no_name_no_time_unknown_os() {
        let out = compress(b"hello");
        assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn golden_bytes() {
        let out = compress(b"cairn cairn cairn cairn\n");
        assert_eq!(
            hex::encode(&out),
            "1f8b08000000000000ff4b4ecc2cca53484627b9009b1dbbdf18000000"
        );
        let big: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        assert_eq!(
            Digest::of(&compress(&big)).to_string(),
            "sha256:6c3fd3a2d6789f023bab4a2f74bc8897098f18b0dcc9cf5a89cff022cc7a1030"
        );
    }

    #[test]
    fn output_does_not_depend_on_write_sizes() {
        let data: Vec<u8> = (0..5_000_000u64)
            .map(|i| ((i * 2_654_435_761) >> 13) as u8 & if i % 3 == 0 { 0xff } else { 0x0f })
            .collect();
        let one_shot = compress(&data);
        for chunk in [1, 511, 512, 4096, 65_536, 3_000_001] {
            let mut w = writer(Vec::new());
            for c in data.chunks(chunk) {
                w.write_all(c).unwrap();
            }
            assert_eq!(w.finish().unwrap(), one_shot, "chunk size {chunk}");
        }
    }

    #[test]
    fn round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compress(&data)[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
