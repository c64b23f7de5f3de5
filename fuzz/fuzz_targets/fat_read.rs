//! A user's card's boot partition (`boot-test --card`): the FAT32 reader on any bytes
//! errs or returns a file no larger than the image.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut disk = std::io::Cursor::new(data);
    for name in [
        "kernel8.img",
        "initramfs8",
        "bcm2711-rpi-4-b.dtb",
        "CMDLINE.TXT",
    ] {
        if let Ok(Some(file)) = cairn_disk::fat::read_root_file(&mut disk, 0, name) {
            assert!(file.len() <= data.len());
        }
    }
});
