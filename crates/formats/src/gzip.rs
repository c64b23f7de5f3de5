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

/// Layers: the input cut into [`BLOCK`]-sized pieces, each compressed as a gzip member of
/// its own (RFC 1952 allows members one after another; every OCI runtime and tool reads
/// them) on several threads, and written in order. Each member's
/// bytes depend only on its piece, so the output is the same on one core as on sixty-four.
pub struct MembersWriter<W: Write> {
    inner: W,
    block: Vec<u8>,
    in_flight: std::collections::VecDeque<std::thread::JoinHandle<io::Result<Vec<u8>>>>,
    threads: usize,
    /// Nothing written yet: `finish` still writes one (empty) member.
    empty: bool,
}

/// A members writer compressing on `threads` threads (the caller decides how many: this
/// crate reads nothing of the machine); the bytes are the same for any number.
pub fn members_writer<W: Write>(inner: W, threads: usize) -> MembersWriter<W> {
    MembersWriter {
        inner,
        block: Vec::with_capacity(BLOCK),
        in_flight: Default::default(),
        threads: threads.max(1),
        empty: true,
    }
}

fn member(piece: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(piece.len() / 3 + 64);
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(&mut out, Compression::new(LEVEL));
    encoder.write_all(piece)?;
    encoder.finish()?;
    Ok(out)
}

impl<W: Write> MembersWriter<W> {
    fn send(&mut self) -> io::Result<()> {
        let piece = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        self.empty = false;
        if self.threads == 1 {
            return self.inner.write_all(&member(&piece)?);
        }
        // Two pieces per thread in flight: the next is ready when one is written.
        while self.in_flight.len() >= 2 * self.threads {
            self.write_oldest()?;
        }
        self.in_flight
            .push_back(std::thread::spawn(move || member(&piece)));
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(handle) = self.in_flight.pop_front() {
            let bytes = handle
                .join()
                .map_err(|_| io::Error::other("a gzip thread panicked"))??;
            self.inner.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes every member in order and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() || self.empty {
            self.send()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for MembersWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (BLOCK - self.block.len()).min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == BLOCK {
                self.send()?;
            }
        }
        Ok(n)
    }

    /// Members are written when their piece is full and compressed, or at `finish`.
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
    fn members_do_not_depend_on_threads_or_write_sizes() {
        let data: Vec<u8> = (0..(3 * BLOCK as u64 + 12_345))
            .map(|i| ((i * 2_654_435_761) >> 13) as u8 & if i % 3 == 0 { 0xff } else { 0x0f })
            .collect();
        let with = |threads: usize, chunk: usize| {
            let mut w = members_writer(Vec::new(), threads);
            for c in data.chunks(chunk) {
                w.write_all(c).unwrap();
            }
            w.finish().unwrap()
        };
        let one = with(1, BLOCK);
        for (threads, chunk) in [(0, 7), (2, 4096), (3, 1), (8, 3_000_001), (64, BLOCK)] {
            assert_eq!(
                with(threads, chunk),
                one,
                "{threads} threads, writes of {chunk}"
            );
        }
        // Four members, each a whole gzip stream of one piece, in order.
        let mut members = Vec::new();
        let mut rest = &one[..];
        while !rest.is_empty() {
            let mut d = flate2::bufread::GzDecoder::new(rest);
            let mut piece = Vec::new();
            d.read_to_end(&mut piece).unwrap();
            rest = d.into_inner();
            members.push(piece);
        }
        assert_eq!(members.len(), 4);
        assert_eq!(members[3].len(), 12_345);
        assert_eq!(members.concat(), data);
        // Any multi-member reader gets the whole input back.
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(
            Digest::of(&one).to_string(),
            "sha256:cf385793d5c3bd935b442db241b6afa6cfcdc004a87937821e9501e6d6cbf463"
        );
        let empty = members_writer(Vec::new(), 2).finish().unwrap();
        assert_eq!(empty, compress(b""), "no input is one empty member");
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
