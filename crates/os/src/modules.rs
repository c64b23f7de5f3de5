//! `modules.dep` and `modules.alias` as depmod writes them, with kmod's binary indexes
//! (which libkmod, and so modprobe, udev and systemd, read instead of the text): Debian's
//! kernel packages ship none (their postinst runs depmod), so they are generated from each
//! module's `.modinfo` and the package's `modules.order`, `modules.builtin` and
//! `modules.builtin.modinfo`.

use crate::rootfs::Rootfs;
use cairn_steps::Error;
use std::io::Read;

/// `modules.dep` and `modules.alias` for every kernel under `usr/lib/modules/`.
pub(crate) fn depmod(fs: &mut Rootfs) -> Result<Vec<String>, Error> {
    let kernels = crate::initramfs::kernel_releases(fs);
    for release in &kernels {
        let dir = &format!("usr/lib/modules/{release}");
        let paths: Vec<String> = fs
            .files_under(dir)
            .into_iter()
            .filter(|p| cairn_debian::kmod::module_name(&p[dir.len() + 1..]).is_some())
            .collect();
        // Thousands of compressed modules, each decompressed to read its .modinfo: on every
        // core, in path order all the same.
        fs.flush()?;
        let fs_ref = &*fs;
        let read = |path: &String| -> Result<cairn_debian::kmod::ModuleInfo, Error> {
            let rel = path[dir.len() + 1..].to_string();
            let bytes = fs_ref.read_flushed(path)?.unwrap_or_default();
            let elf = decompress_module(&rel, &bytes)?;
            let info =
                cairn_debian::kmod::modinfo(&elf).map_err(|e| Error::at(format!("/{path}"), e))?;
            let exports =
                cairn_debian::kmod::exports(&elf).map_err(|e| Error::at(format!("/{path}"), e))?;
            Ok(cairn_debian::kmod::ModuleInfo {
                path: rel,
                info,
                exports,
            })
        };
        let modules = crate::parallel::parallel_map(&paths, crate::parallel::threads(), read)
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        let (dep, alias) =
            cairn_debian::kmod::depmod(&modules).map_err(|e| Error::at(format!("/{dir}"), e))?;
        fs.add_file(&format!("{dir}/modules.dep"), dep.as_bytes(), 0o644, 0, 0)?;
        fs.add_file(
            &format!("{dir}/modules.alias"),
            alias.as_bytes(),
            0o644,
            0,
            0,
        )?;
        let mut text = |name: &str| -> Result<Vec<u8>, Error> {
            Ok(fs.read_file(&format!("{dir}/{name}"))?.unwrap_or_default())
        };
        let order = String::from_utf8_lossy(&text("modules.order")?).into_owned();
        let builtin = String::from_utf8_lossy(&text("modules.builtin")?).into_owned();
        let builtin_modinfo = text("modules.builtin.modinfo")?;
        let indexes =
            cairn_debian::kmod::depmod_indexes(&modules, &dep, &order, &builtin, &builtin_modinfo)
                .map_err(|e| Error::at(format!("/{dir}"), e))?;
        for (name, bytes) in indexes {
            fs.add_file(&format!("{dir}/{name}"), &bytes, 0o644, 0, 0)?;
        }
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
        flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)
    } else {
        out.extend_from_slice(bytes);
        Ok(out.len())
    };
    r.map_err(|e| Error::at(format!("decompressing module {path}"), e))?;
    Ok(out)
}

fn zstd_decode(bytes: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
    let decoded = zstd::stream::decode_all(bytes)?;
    out.extend_from_slice(&decoded);
    Ok(decoded.len())
}
