//! The boot partition writer, read back by Cairn's firmware-style reader: every file of
//! the root directory comes back byte for byte by its name in any case, or the writer
//! refused the tree. (fsck.vfat and mtools check the example cards in tests/it/nodes.rs.)
#![no_main]
use cairn_disk::fat::{FatConfig, FatEntry, fat32_size_needed, read_root_file, write_fat32};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|input: (BTreeMap<String, Vec<u8>>, u32, u16)| {
    let (files, volume_id, extra_kib) = input;
    let entries: BTreeMap<String, FatEntry> = files
        .iter()
        .take(24)
        .map(|(n, d)| (n.clone(), FatEntry::File(d.clone())))
        .collect();
    let Ok(needed) = fat32_size_needed(&entries) else {
        return;
    };
    let config = FatConfig {
        size_bytes: needed + u64::from(extra_kib % 64) * 1024,
        volume_id,
        label: "CAIRN".into(),
        hidden_sectors: 0,
        mtime: 1_700_000_000,
    };
    let mut image = Vec::new();
    if write_fat32(&config, &entries, &mut image).is_err() {
        return;
    }
    assert_eq!(image.len() as u64, config.size_bytes);
    let mut disk = std::io::Cursor::new(&image[..]);
    for (name, entry) in &entries {
        let FatEntry::File(data) = entry else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        // Names match without ASCII case, as the firmware and the reader do.
        let got = read_root_file(&mut disk, 0, &name.to_ascii_uppercase()).unwrap();
        assert_eq!(got.as_deref(), Some(&data[..]), "{name}");
    }
});
