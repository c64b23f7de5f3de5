//! The layer writer, read back by the `tar` crate's reader: every entry the writer took
//! comes back with its path, kind, mode, owner, time and bytes (long paths included), in
//! order, or the writer refused it.
#![no_main]
use arbitrary::Arbitrary;
use cairn_formats::tar::{EntryMeta, TarWriter};
use libfuzzer_sys::fuzz_target;
use std::io::Read;

#[derive(Arbitrary, Debug)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    /// Path components, joined with `/`.
    path: Vec<String>,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: u32,
    kind: Kind,
}

fuzz_target!(|entries: Vec<Entry>| {
    let mut w = TarWriter::new(Vec::new());
    let mut expected = Vec::new();
    for e in entries {
        let path = e.path.join("/");
        let meta = EntryMeta {
            mode: e.mode.into(),
            uid: e.uid.into(),
            gid: e.gid.into(),
            mtime: e.mtime.into(),
        };
        let (result, kind, data) = match &e.kind {
            Kind::Dir => (w.dir(&path, meta), tar::EntryType::Directory, vec![]),
            Kind::File(data) => (
                w.file(&path, meta, data.len() as u64, &data[..]),
                tar::EntryType::Regular,
                data.clone(),
            ),
            Kind::Symlink(t) => (
                w.symlink(&path, t, meta),
                tar::EntryType::Symlink,
                t.clone().into_bytes(),
            ),
            Kind::Hardlink(t) => (
                w.hardlink(&path, t, meta),
                tar::EntryType::Link,
                t.clone().into_bytes(),
            ),
        };
        if result.is_ok() {
            let shown = if kind == tar::EntryType::Directory {
                format!("{}/", path.trim_end_matches('/'))
            } else {
                path.clone()
            };
            expected.push((
                shown,
                kind,
                meta.mode & 0o7777,
                meta.uid,
                meta.gid,
                meta.mtime,
                data,
            ));
        }
    }
    let bytes = w.finish().unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut got = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let kind = h.entry_type();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let data = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                entry.link_name_bytes().unwrap().into_owned()
            }
            _ => {
                let mut d = Vec::new();
                entry.read_to_end(&mut d).unwrap();
                d
            }
        };
        got.push((
            path,
            kind,
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mtime().unwrap(),
            data,
        ));
    }
    assert_eq!(got, expected);
});
