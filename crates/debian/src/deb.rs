//! Native `.deb` reading: the ar container, `control.tar.*` and a streaming walk of
//! `data.tar.*` (xz, zstd, gzip or plain), with every path checked to stay inside the root.

use std::fmt;
use std::io::{self, BufReader, Read};

#[derive(Debug)]
pub enum DebError {
    Io {
        package: String,
        err: io::Error,
    },
    Format {
        package: String,
        what: String,
    },
    /// An entry that would land outside the root filesystem.
    UnsafePath {
        package: String,
        entry: String,
        why: &'static str,
    },
}

impl fmt::Display for DebError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DebError::Io { package, err } => write!(f, "{package}: reading the .deb: {err}"),
            DebError::Format { package, what } => write!(f, "{package}: not a valid .deb: {what}"),
            DebError::UnsafePath {
                package,
                entry,
                why,
            } => write!(f, "{package}: entry {entry:?} {why}; refusing to unpack it"),
        }
    }
}

impl std::error::Error for DebError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DebError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebEntryKind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: String,
    },
    /// A hard link to an earlier entry of the same package (normalised path).
    Hardlink {
        target: String,
    },
}

/// One entry of `data.tar`, with its path normalised (`usr/bin/env`: relative, no `./`,
/// no trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebEntry {
    pub path: String,
    pub kind: DebEntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// Normalises a path from an archive and rejects what could escape the root.
pub fn normalize_path(raw: &str) -> Result<String, &'static str> {
    if raw.starts_with('/') {
        return Err("is an absolute path");
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("climbs out of the root with `..`"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

struct ArMember {
    name: String,
    size: u64,
}

fn read_ar_header(r: &mut impl Read, package: &str) -> Result<Option<ArMember>, DebError> {
    let mut header = [0u8; 60];
    let mut filled = 0;
    while filled < 60 {
        let n = r.read(&mut header[filled..]).map_err(|err| DebError::Io {
            package: package.into(),
            err,
        })?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    if filled == 0 {
        return Ok(None);
    }
    let bad = |what: String| DebError::Format {
        package: package.into(),
        what,
    };
    if filled < 60 || &header[58..60] != b"`\n" {
        return Err(bad("truncated or corrupt ar member header".into()));
    }
    let name = String::from_utf8_lossy(&header[..16])
        .trim_end()
        .trim_end_matches('/')
        .to_string();
    let size = String::from_utf8_lossy(&header[48..58])
        .trim()
        .parse()
        .map_err(|_| bad(format!("bad size of ar member {name:?}")))?;
    Ok(Some(ArMember { name, size }))
}

/// dpkg-deb compresses large members with xz's multithreaded encoder, which cuts them
/// into blocks (24 MiB each for a kernel package): liblzma's multithreaded decoder unpacks
/// those blocks on every core, and the bytes are the same either way. Members are one xz
/// stream, as dpkg-deb writes them.
fn xz_decoder<'a>(
    r: impl Read + 'a,
    package: &str,
) -> Result<liblzma::read::XzDecoder<impl Read + 'a>, DebError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(u32::try_from(threads).unwrap_or(1))
        // Above this, liblzma decodes on one thread rather than failing.
        .memlimit_threading(1 << 30)
        .memlimit_stop(u64::MAX)
        .decoder()
        .map_err(|e| DebError::Format {
            package: package.into(),
            what: format!("starting the xz decoder: {e}"),
        })?;
    Ok(liblzma::read::XzDecoder::new_stream(r, stream))
}

fn decompressor<'a>(
    name: &str,
    r: impl Read + 'a,
    package: &str,
) -> Result<Box<dyn Read + 'a>, DebError> {
    let ext = name.rsplit_once(".tar").map(|(_, e)| e).unwrap_or("?");
    Ok(match ext {
        ".xz" => Box::new(xz_decoder(r, package)?),
        ".zst" => Box::new(
            zstd::stream::read::Decoder::new(r).map_err(|err| DebError::Io {
                package: package.into(),
                err,
            })?,
        ),
        ".gz" => Box::new(flate2::read::MultiGzDecoder::new(r)),
        "" => Box::new(r),
        _ => {
            return Err(DebError::Format {
                package: package.into(),
                what: format!("unsupported member {name:?}"),
            });
        }
    })
}

/// What `unpack_data` found besides the data entries.
#[derive(Debug, Clone, Default)]
pub struct DebInfo {
    /// The `control` file of `control.tar.*`.
    pub control: String,
    /// Other control members (`conffiles`, `md5sums`, ...), by name.
    pub control_files: Vec<(String, Vec<u8>)>,
}

/// Reads a .deb, calling `on_entry` for every `data.tar` entry in archive order with a
/// reader over the file's bytes (empty for non-files).
pub fn unpack_data<R: Read>(
    deb: R,
    package: &str,
    mut on_entry: impl FnMut(&DebEntry, &mut dyn Read) -> io::Result<()>,
) -> Result<DebInfo, DebError> {
    let io_err = |err: io::Error| DebError::Io {
        package: package.into(),
        err,
    };
    let bad = |what: String| DebError::Format {
        package: package.into(),
        what,
    };
    let mut r = BufReader::with_capacity(1 << 16, deb);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| bad("too short to be an ar archive".into()))?;
    if &magic != b"!<arch>\n" {
        return Err(bad("no ar magic".into()));
    }
    let mut info = DebInfo::default();
    let mut saw_data = false;
    while let Some(member) = read_ar_header(&mut r, package)? {
        let mut body = (&mut r).take(member.size);
        if member.name == "debian-binary" {
            let mut v = String::new();
            body.read_to_string(&mut v).map_err(io_err)?;
            if !v.starts_with("2.") {
                return Err(bad(format!("unsupported format version {:?}", v.trim())));
            }
        } else if member.name.starts_with("control.tar") {
            let mut archive = tar::Archive::new(decompressor(&member.name, &mut body, package)?);
            for entry in archive.entries().map_err(io_err)? {
                let mut entry = entry.map_err(io_err)?;
                if entry.header().entry_type().is_file() {
                    let name = normalize_path(&entry.path().map_err(io_err)?.to_string_lossy())
                        .unwrap_or_default();
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).map_err(io_err)?;
                    if name == "control" {
                        info.control = String::from_utf8_lossy(&bytes).into_owned();
                    } else {
                        info.control_files.push((name, bytes));
                    }
                }
            }
            drop(archive);
            io::copy(&mut body, &mut io::sink()).map_err(io_err)?;
        } else if member.name.starts_with("data.tar") {
            saw_data = true;
            walk_data(
                decompressor(&member.name, &mut body, package)?,
                package,
                &mut on_entry,
            )?;
            io::copy(&mut body, &mut io::sink()).map_err(io_err)?;
        } else {
            io::copy(&mut body, &mut io::sink()).map_err(io_err)?;
        }
        if body.limit() != 0 {
            return Err(bad(format!("ar member {:?} is truncated", member.name)));
        }
        if member.size % 2 == 1 {
            let mut pad = [0u8; 1];
            let _ = r.read(&mut pad).map_err(io_err)?;
        }
    }
    if !saw_data {
        return Err(bad("no data.tar member".into()));
    }
    if info.control.is_empty() {
        return Err(bad("no control file".into()));
    }
    Ok(info)
}

fn walk_data(
    data: impl Read,
    package: &str,
    on_entry: &mut impl FnMut(&DebEntry, &mut dyn Read) -> io::Result<()>,
) -> Result<(), DebError> {
    let io_err = |err: io::Error| DebError::Io {
        package: package.into(),
        err,
    };
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_path = |why| DebError::UnsafePath {
            package: package.into(),
            entry: raw_path.clone(),
            why,
        };
        let path = normalize_path(&raw_path).map_err(unsafe_path)?;
        let header = entry.header();
        let mode = header.mode().map_err(io_err)? & 0o7777;
        let uid = header.uid().map_err(io_err)?;
        let gid = header.gid().map_err(io_err)?;
        let link = || -> Result<String, DebError> {
            let bytes = entry.link_name_bytes().ok_or_else(|| DebError::Format {
                package: package.into(),
                what: format!("{raw_path}: link without target"),
            })?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        let kind = match header.entry_type() {
            tar::EntryType::Directory => DebEntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => DebEntryKind::File {
                size: header.size().map_err(io_err)?,
            },
            tar::EntryType::Symlink => DebEntryKind::Symlink { target: link()? },
            tar::EntryType::Link => DebEntryKind::Hardlink {
                target: normalize_path(&link()?).map_err(unsafe_path)?,
            },
            other => {
                return Err(DebError::Format {
                    package: package.into(),
                    what: format!("{raw_path}: unsupported entry type {other:?}"),
                });
            }
        };
        if path.is_empty() {
            if kind == DebEntryKind::Dir {
                continue;
            }
            return Err(unsafe_path("names the root itself"));
        }
        let e = DebEntry {
            path,
            kind,
            mode,
            uid,
            gid,
        };
        on_entry(&e, &mut entry).map_err(io_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize_path("./usr/bin/").unwrap(), "usr/bin");
        assert_eq!(normalize_path("./").unwrap(), "");
        assert!(normalize_path("/etc/passwd").is_err());
        assert!(normalize_path("./usr/../../etc").is_err());
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;
    use std::io::Write;

    fn data_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        b.append_data(&mut h, "./usr/", io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o4755);
        h.set_uid(0);
        h.set_gid(42);
        h.set_size(5);
        b.append_data(&mut h, "./usr/x", &b"hello"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_mode(0o4755);
        h.set_uid(0);
        h.set_gid(42);
        h.set_size(0);
        b.append_link(&mut h, "./usr/y", "./usr/x").unwrap();
        b.into_inner().unwrap()
    }

    fn control_tar_gz() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        let control = b"Package: t\nVersion: 1\n";
        h.set_size(control.len() as u64);
        b.append_data(&mut h, "./control", &control[..]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&b.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    }

    fn ar(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend_from_slice(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    "100644",
                    data.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn deb(data_name: &str, data: Vec<u8>) -> Vec<u8> {
        ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control_tar_gz()),
            (data_name, data),
        ])
    }

    fn entries(bytes: &[u8]) -> Result<Vec<(DebEntry, Vec<u8>)>, DebError> {
        let mut out = Vec::new();
        let info = unpack_data(bytes, "t", |e, r| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)?;
            out.push((e.clone(), data));
            Ok(())
        })?;
        assert_eq!(info.control, "Package: t\nVersion: 1\n");
        Ok(out)
    }

    #[test]
    fn reads_every_compression() {
        let plain = data_tar();
        let xz = {
            let mut w = liblzma::write::XzEncoder::new(Vec::new(), 6);
            w.write_all(&plain).unwrap();
            w.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&plain[..], 3).unwrap();
        let gz = {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(&plain).unwrap();
            w.finish().unwrap()
        };
        for (name, data) in [
            ("data.tar.xz", xz),
            ("data.tar.zst", zst),
            ("data.tar.gz", gz),
            ("data.tar", plain.clone()),
        ] {
            let got = entries(&deb(name, data)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.len(), 3, "{name}");
            assert_eq!(
                got[0].0,
                DebEntry {
                    path: "usr".into(),
                    kind: DebEntryKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0
                }
            );
            assert_eq!(
                got[1].0,
                DebEntry {
                    path: "usr/x".into(),
                    kind: DebEntryKind::File { size: 5 },
                    mode: 0o4755,
                    uid: 0,
                    gid: 42
                }
            );
            assert_eq!(got[1].1, b"hello");
            assert_eq!(
                got[2].0.kind,
                DebEntryKind::Hardlink {
                    target: "usr/x".into()
                }
            );
        }
    }

    #[test]
    fn broken_debs_are_clear_errors() {
        let good = deb("data.tar", data_tar());
        let err = entries(&good[..good.len() - 700]).unwrap_err().to_string();
        assert!(err.starts_with("t: "), "{err}");
        let err = entries(b"PK\x03\x04 not a deb").unwrap_err().to_string();
        assert!(err.contains("t: not a valid .deb: no ar magic"), "{err}");
        let no_data = ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control_tar_gz()),
        ]);
        assert!(
            entries(&no_data)
                .unwrap_err()
                .to_string()
                .contains("no data.tar member")
        );
        let err = entries(&deb("data.tar.bz2", vec![1, 2, 3]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported member \"data.tar.bz2\""), "{err}");
    }
}
