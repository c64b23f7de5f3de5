//! Writes small .deb files and a signed repository for hermetic tests.

use std::io::Write;
use std::path::Path;

pub enum Item<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    /// A raw path written as is, for path-traversal tests.
    RawFile(&'a str, &'a [u8]),
}

fn tar_xz(items: &[Item<'_>]) -> Vec<u8> {
    let enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
    let mut b = tar::Builder::new(enc);
    let header = |kind, mode, size| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h
    };
    for item in items {
        match item {
            Item::Dir(p, m) => {
                let mut h = header(tar::EntryType::Directory, *m, 0);
                b.append_data(&mut h, format!("./{p}/"), std::io::empty())
                    .unwrap();
            }
            Item::File(p, data, m) => {
                let mut h = header(tar::EntryType::Regular, *m, data.len() as u64);
                b.append_data(&mut h, format!("./{p}"), *data).unwrap();
            }
            Item::Symlink(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, format!("./{p}"), t).unwrap();
            }
            Item::RawFile(p, data) => {
                // Bypass the tar crate's own path checks: write the name bytes directly.
                let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                let name = p.as_bytes();
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn ar_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    write!(
        out,
        "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
        name,
        0,
        0,
        0,
        "100644",
        data.len()
    )
    .unwrap();
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(b'\n');
    }
}

/// A .deb with the given control fields and data items.
pub fn build(name: &str, version: &str, arch: &str, depends: &str, items: &[Item<'_>]) -> Vec<u8> {
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Cairn Tests <t@cairn.invalid>\nDescription: test package\n"
    );
    if !depends.is_empty() {
        control.push_str(&format!("Depends: {depends}\n"));
    }
    let control_tar = tar_xz(&[Item::File("control", control.as_bytes(), 0o644)]);
    let data_tar = tar_xz(items);
    let mut out = b"!<arch>\n".to_vec();
    ar_member(&mut out, "debian-binary", b"2.0\n");
    ar_member(&mut out, "control.tar.xz", &control_tar);
    ar_member(&mut out, "data.tar.xz", &data_tar);
    out
}

pub struct RepoPackage {
    pub name: String,
    pub version: String,
    pub depends: String,
    pub provides: String,
    pub deb: Vec<u8>,
}

/// Writes `dists/SUITE/{InRelease,main/binary-ARCH/Packages.xz}` and `pool/` under `dir`,
/// signed by `key`. Every package is `Architecture: all` and listed for each arch.
pub fn write_repo(
    dir: &Path,
    suite: &str,
    arches: &[&str],
    packages: &[RepoPackage],
    key: &cairn_debian::release::signing::SecretKey,
) {
    let mut index = String::new();
    for p in packages {
        let pool = format!("pool/main/{}_{}_all.deb", p.name, p.version);
        std::fs::create_dir_all(dir.join("pool/main")).unwrap();
        std::fs::write(dir.join(&pool), &p.deb).unwrap();
        index.push_str(&format!(
            "Package: {}\nVersion: {}\nArchitecture: all\nFilename: {pool}\nSize: {}\nSHA256: {}\n",
            p.name,
            p.version,
            p.deb.len(),
            cairn_formats::Digest::of(&p.deb).hex()
        ));
        if !p.depends.is_empty() {
            index.push_str(&format!("Depends: {}\n", p.depends));
        }
        if !p.provides.is_empty() {
            index.push_str(&format!("Provides: {}\n", p.provides));
        }
        index.push('\n');
    }
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(index.as_bytes()).unwrap();
    let xz = enc.finish().unwrap();
    let mut release = format!(
        "Origin: Cairn Tests\nSuite: {suite}\nCodename: {suite}\nDate: Tue, 14 Nov 2023 22:13:20 UTC\nArchitectures: {}\nComponents: main\nSHA256:\n",
        arches.join(" ")
    );
    for arch in arches {
        let rel = format!("main/binary-{arch}/Packages.xz");
        let path = dir.join("dists").join(suite).join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &xz).unwrap();
        release.push_str(&format!(
            " {} {} {rel}\n",
            cairn_formats::Digest::of(&xz).hex(),
            xz.len()
        ));
    }
    let signed = cairn_debian::release::signing::sign_cleartext(key, &release);
    std::fs::write(dir.join("dists").join(suite).join("InRelease"), signed).unwrap();
}
