//! `modules.dep` and `modules.alias` as depmod writes them: Debian's kernel packages ship
//! none (their postinst runs depmod), so they are generated from each module's `.modinfo`.

use crate::rootfs::Rootfs;
use cairn_steps::Error;
use std::io::Read;

/// `modules.dep` and `modules.alias` for every kernel under `usr/lib/modules/`.
pub(crate) fn depmod(fs: &mut Rootfs) -> Result<Vec<String>, Error> {
    let kernels = crate::initramfs::kernel_releases(fs);
    for release in &kernels {
        let dir = &format!("usr/lib/modules/{release}");
        let mut modules = Vec::new();
        for path in fs.files_under(dir) {
            let rel = path[dir.len() + 1..].to_string();
            if cairn_debian::kmod::module_name(&rel).is_none() {
                continue;
            }
            let bytes = fs.read_file(&path)?.unwrap_or_default();
            let elf = decompress_module(&rel, &bytes)?;
            let info = cairn_debian::kmod::modinfo(&elf)
                .map_err(|e| Error::msg(format!("/{path}: {e}")))?;
            modules.push(cairn_debian::kmod::ModuleInfo { path: rel, info });
        }
        let (dep, alias) =
            cairn_debian::kmod::depmod(&modules).map_err(|e| Error::msg(format!("/{dir}: {e}")))?;
        fs.add_file(&format!("{dir}/modules.dep"), dep.as_bytes(), 0o644, 0, 0)?;
        fs.add_file(
            &format!("{dir}/modules.alias"),
            alias.as_bytes(),
            0o644,
            0,
            0,
        )?;
    }
    Ok(kernels)
}

fn decompress_module(path: &str, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let r = if path.ends_with(".xz") {
        liblzma::read::XzDecoder::new_multi_decoder(bytes).read_to_end(&mut out)
    } else if path.ends_with(".zst") {
        zstd_decode(bytes, &mut out)
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)
    } else {
        out.extend_from_slice(bytes);
        Ok(out.len())
    };
    r.map_err(|e| Error::msg(format!("decompressing module {path}: {e}")))?;
    Ok(out)
}

fn zstd_decode(bytes: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
    let decoded = zstd::stream::decode_all(bytes)?;
    out.extend_from_slice(&decoded);
    Ok(decoded.len())
}
