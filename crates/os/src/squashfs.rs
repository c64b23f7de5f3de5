//! The root filesystem as a zstd squashfs (backhand), its data blocks compressed ahead on
//! every core in the order backhand asks for them; the bytes do not depend on the number
//! of cores.

use crate::rootfs::{Kind, Node, ScratchReader};
use cairn_steps::Error;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The squashfs block size (128 KiB, mksquashfs's default).
const BLOCK_SIZE: u32 = 1 << 17;

/// Where the data blocks backhand compresses lie in the scratch file, in the order it
/// compresses them: files in `Path` order (its node order), every file of at least one block
/// cut into blocks (the last one shorter), all-zero blocks left out (written as holes).
/// Smaller files go to fragments, which backhand compresses itself.
fn data_blocks(nodes: &BTreeMap<String, Node>, block_size: u32) -> Vec<(u64, u64)> {
    let mut files: Vec<(&Path, u64, u64)> = nodes
        .iter()
        .filter_map(|(path, node)| match node.kind {
            Kind::File { offset, size, .. } if size >= u64::from(block_size) => {
                Some((Path::new(path.as_str()), offset, size))
            }
            _ => None,
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let mut blocks = Vec::new();
    for (_, offset, size) in files {
        let mut at = 0;
        while at < size {
            let len = (size - at).min(u64::from(block_size));
            blocks.push((offset + at, len));
            at += len;
        }
    }
    blocks
}

/// Reads the blocks from the scratch file and compresses them on `threads` threads with
/// zstd at backhand's level, sending (block, compressed) in order; all-zero blocks are
/// skipped as backhand skips them. Stops when the receiver is gone.
fn compress_ahead(
    scratch: &File,
    blocks: &[(u64, u64)],
    threads: usize,
    tx: std::sync::mpsc::SyncSender<(Vec<u8>, Vec<u8>)>,
) {
    let mut in_flight = std::collections::VecDeque::new();
    for &(offset, len) in blocks {
        let mut block = vec![0u8; len as usize];
        if scratch.read_exact_at(&mut block, offset).is_err() {
            return;
        }
        if block.iter().all(|b| *b == 0) {
            continue;
        }
        in_flight.push_back(std::thread::spawn(move || {
            let compressed = zstd::bulk::compress(&block, ZSTD_LEVEL).ok();
            (block, compressed)
        }));
        while in_flight.len() >= threads.max(1) * 2 {
            if !send_oldest(&mut in_flight, &tx) {
                return;
            }
        }
    }
    while !in_flight.is_empty() {
        if !send_oldest(&mut in_flight, &tx) {
            return;
        }
    }
}

type Compressing = std::thread::JoinHandle<(Vec<u8>, Option<Vec<u8>>)>;

fn send_oldest(
    in_flight: &mut std::collections::VecDeque<Compressing>,
    tx: &std::sync::mpsc::SyncSender<(Vec<u8>, Vec<u8>)>,
) -> bool {
    let Some(handle) = in_flight.pop_front() else {
        return true;
    };
    match handle.join() {
        Ok((block, Some(compressed))) => tx.send((block, compressed)).is_ok(),
        // A block that failed to compress ahead is compressed by backhand itself.
        _ => true,
    }
}

/// zstd's level in backhand's default compressor (3, as mksquashfs's default).
const ZSTD_LEVEL: i32 = 3;

/// backhand's compressor, answering a data block it is asked for from the blocks
/// compressed ahead when the bytes are the ones expected (compared in full), and
/// compressing anything else itself (fragments, metadata, a block out of the expected
/// order). zstd gives the same bytes for the same block either way, so the image does not
/// depend on which path a block took. backhand wants a `&'static` compressor: one small
/// struct is leaked per squashfs written.
#[derive(Default)]
struct AheadCompressor {
    next: std::sync::Mutex<Option<std::sync::mpsc::Receiver<(Vec<u8>, Vec<u8>)>>>,
    front: std::sync::Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl backhand::compression::CompressionAction for AheadCompressor {
    type Error = backhand::BackhandError;
    type Compressor = backhand::compression::Compressor;
    type FilesystemCompressor = backhand::FilesystemCompressor;
    type SuperBlock = backhand::SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        compressor: Self::Compressor,
    ) -> Result<(), Self::Error> {
        backhand::compression::DefaultCompressor.decompress(bytes, out, compressor)
    }

    fn compress(
        &self,
        bytes: &[u8],
        fc: Self::FilesystemCompressor,
        block_size: u32,
    ) -> Result<Vec<u8>, Self::Error> {
        let mut front = self.front.lock().unwrap();
        if front.is_none() {
            if let Some(rx) = self.next.lock().unwrap().as_ref() {
                *front = rx.recv().ok();
            }
        }
        if front
            .as_ref()
            .is_some_and(|(block, _)| block.as_slice() == bytes)
        {
            let (_, compressed) = front.take().expect("checked above");
            return Ok(compressed);
        }
        drop(front);
        backhand::compression::DefaultCompressor.compress(bytes, fc, block_size)
    }

    fn compression_options(
        &self,
        superblock: &mut Self::SuperBlock,
        kind: &backhand::kind::Kind,
        fs_compressor: Self::FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, Self::Error> {
        backhand::compression::DefaultCompressor.compression_options(
            superblock,
            kind,
            fs_compressor,
        )
    }
}

/// Writes `nodes` (file bytes in `scratch`) as a squashfs, every mtime `mtime`, sorted by
/// path; returns the writer and the bytes written.
pub(crate) fn write<W: Write + io::Seek>(
    nodes: &BTreeMap<String, Node>,
    scratch: &File,
    out: W,
    mtime: u32,
) -> Result<(W, u64), Error> {
    use backhand::compression::Compressor;
    use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};
    // backhand is built without its error strings: its own conversion to an I/O error
    // keeps the cause (a full disk stays `StorageFull`) and gives it a text.
    let fserr = |e: backhand::BackhandError| Error::at("writing the squashfs", io::Error::from(e));
    let mut fs = FilesystemWriter::default();
    fs.set_time(mtime);
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    fs.set_compressor(FilesystemCompressor::new(Compressor::Zstd, None).map_err(fserr)?);
    fs.set_block_size(BLOCK_SIZE);
    for (path, node) in nodes {
        let header = NodeHeader::new(
            node.mode as u16 & 0o7777,
            node.uid as u32,
            node.gid as u32,
            mtime,
        );
        let abs = format!("/{path}");
        match &node.kind {
            Kind::Dir => fs.push_dir(&abs, header).map_err(fserr)?,
            Kind::Symlink(target) => fs
                .push_symlink(target.as_str(), &abs, header)
                .map_err(fserr)?,
            Kind::File { offset, size, .. } => {
                fs.push_file(
                    ScratchReader {
                        file: scratch,
                        offset: *offset,
                        remaining: *size,
                    },
                    &abs,
                    header,
                )
                .map_err(fserr)?;
            }
        }
    }
    // Data blocks are compressed ahead, on every core, in the order backhand will ask
    // for them; backhand itself stays on this thread.
    let blocks = data_blocks(nodes, BLOCK_SIZE);
    let ahead: &'static AheadCompressor = Box::leak(Box::default());
    fs.set_kind(backhand::kind::Kind::new_v4(ahead));
    let mut out = out;
    let written = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(4 * crate::parallel::threads());
        *ahead.next.lock().unwrap() = Some(rx);
        s.spawn(move || compress_ahead(scratch, &blocks, crate::parallel::threads(), tx));
        let written = fs.write(&mut out);
        // Whatever is left (a write that failed) is dropped: the producer then stops.
        ahead.next.lock().unwrap().take();
        ahead.front.lock().unwrap().take();
        written
    });
    let (_, n_bytes) = written.map_err(fserr)?;
    Ok((out, n_bytes))
}
