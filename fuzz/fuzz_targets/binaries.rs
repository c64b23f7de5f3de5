//! Binary formats read from packages and cards: ELF (shared objects, programs, kernel
//! modules' `.modinfo` and exports), an MBR, and device trees.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_formats::elf::read_linkage(data);
    let _ = cairn_formats::elf::read_shared(data);
    let _ = cairn_debian::kmod::modinfo(data);
    let _ = cairn_debian::kmod::exports(data);
    if let Ok(sector) = <&[u8; 512]>::try_from(data.get(..512).unwrap_or(&[])) {
        let _ = cairn_disk::mbr::read_mbr(sector);
    }
    let mut dtb = data.to_vec();
    let _ =
        cairn_formats::fdt::remove_properties(&mut dtb, &[("/soc/mmc@7e340000", "vqmmc-supply")]);
    // Removing properties never changes the tree's size.
    assert_eq!(dtb.len(), data.len());
});
