//! FAT32 and MBR writers: a golden digest, determinism, errors, and differential checks
//! with dosfstools (`fsck.vfat`), mtools and util-linux (`sfdisk`).

use cairn_disk::fat::{FatConfig, FatEntry, fat32_size_needed, write_fat32};
use cairn_disk::mbr::{MBR_KIND_FAT32_LBA, MBR_KIND_LINUX, MbrPartition, write_mbr};
use cairn_formats::Digest;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;
const MTIME: u64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

fn config(size_bytes: u64) -> FatConfig {
    FatConfig {
        size_bytes,
        volume_id: 0x1234_ABCD,
        label: "CAIRN-BOOT".to_string(),
        hidden_sectors: 0,
        mtime: MTIME,
    }
}

fn file(bytes: &[u8]) -> FatEntry {
    FatEntry::File(bytes.to_vec())
}

/// Deterministic filler bytes (xorshift), so file contents are not all alike.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn fat32(config: &FatConfig, entries: &BTreeMap<String, FatEntry>) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_fat32(config, entries, &mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, config.size_bytes);
    bytes
}

fn small_tree() -> BTreeMap<String, FatEntry> {
    BTreeMap::from([
        ("config.txt".to_string(), file(b"arm_64bit=1\n")),
        ("README".to_string(), file(b"upper case 8.3\n")),
        ("empty".to_string(), file(b"")),
        ("a long name.text".to_string(), file(&[7u8; 1500])),
        (
            "boot/Image".to_string(),
            file(&pseudo_random_bytes(3000, 1)),
        ),
        ("boot/dtbs/x.dtb".to_string(), file(b"dtb")),
        ("cairn".to_string(), FatEntry::Dir),
    ])
}

#[test]
fn golden_digest() {
    let bytes = fat32(&config(33 * MIB), &small_tree());
    assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
    assert_eq!(&bytes[82..90], b"FAT32   ");
    assert_eq!(
        &bytes[6 * 512..7 * 512],
        &bytes[..512],
        "backup boot sector"
    );
    assert_eq!(
        Digest::of(&bytes).to_string(),
        "sha256:cd6c2a093a0cb9ceb5fb8b27e3cefbd7fc74c4cd17621ecb751d3489269105f4"
    );
}

#[test]
fn output_is_deterministic() {
    let mut config = config(40 * MIB);
    config.hidden_sectors = 8192;
    assert_eq!(fat32(&config, &small_tree()), fat32(&config, &small_tree()));
    let reversed: BTreeMap<_, _> = small_tree().into_iter().rev().collect();
    assert_eq!(fat32(&config, &small_tree()), fat32(&config, &reversed));
}

#[test]
fn size_needed_is_the_smallest_size_that_fits() {
    let mut entries = small_tree();
    entries.insert("big".to_string(), file(&vec![1u8; 40 * MIB as usize]));
    let needed = fat32_size_needed(&entries).unwrap();
    assert_eq!(needed % 512, 0);
    for extra_sectors in [0, 1, 2, 3, 128, 129, 2048] {
        let size = needed + extra_sectors * 512;
        let mut out = std::io::sink();
        write_fat32(&config(size), &entries, &mut out).unwrap();
    }
    // One-sector clusters at this size: a few sectors less no longer fits.
    let too_small = config(needed - 4 * 512);
    let err = write_fat32(&too_small, &entries, std::io::sink()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains(&format!("{needed} bytes are needed")),
        "{err}"
    );
}

#[test]
fn content_too_big_is_an_error_naming_the_bytes_needed() {
    let entries = BTreeMap::from([("big.bin".to_string(), file(&vec![0u8; 40 * MIB as usize]))]);
    let err = write_fat32(&config(34 * MIB), &entries, std::io::sink()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let needed = fat32_size_needed(&entries).unwrap();
    assert!(needed > 40 * MIB);
    assert!(
        err.to_string().contains(&format!("{needed} bytes")),
        "{err}"
    );

    let err = write_fat32(&config(16 * MIB), &BTreeMap::new(), std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("bytes are needed"), "{err}");
}

#[test]
fn invalid_names_are_errors() {
    let write = |paths: &[&str]| {
        let entries: BTreeMap<String, FatEntry> =
            paths.iter().map(|p| (p.to_string(), file(b"x"))).collect();
        write_fat32(&config(33 * MIB), &entries, std::io::sink())
    };
    let err = write(&["Config.txt", "config.txt"]).unwrap_err();
    assert!(err.to_string().contains("differ only in case"), "{err}");
    let err = write(&["Boot/a", "boot/b"]).unwrap_err();
    assert!(err.to_string().contains("differ only in case"), "{err}");
    for bad in [
        "",
        "/abs",
        "a//b",
        "a/",
        "what?",
        "a:b",
        "tab\there",
        "dot.",
        "..",
    ] {
        let err = write(&[bad]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
    }
    assert!(write(&["n".repeat(256).as_str()]).is_err());
    assert!(write(&["n".repeat(255).as_str()]).is_ok());
    let err = write(&["kernel", "kernel/inside"]).unwrap_err();
    assert!(err.to_string().contains("is a file"), "{err}");
    let mut lowercase_label = config(33 * MIB);
    lowercase_label.label = "boot".to_string();
    assert!(write_fat32(&lowercase_label, &BTreeMap::new(), std::io::sink()).is_err());
}

#[test]
fn overlapping_or_invalid_partitions_are_errors() {
    let partition = |start_lba, sectors| MbrPartition {
        start_lba,
        sectors,
        kind: MBR_KIND_LINUX,
        bootable: false,
    };
    let write = |partitions: &[MbrPartition]| write_mbr(1, partitions, std::io::sink());
    let err = write(&[partition(2048, 4096), partition(4000, 10)]).unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
    assert!(write(&[partition(2048, 4096), partition(6144, 10)]).is_ok());
    assert!(write(&[partition(0, 10)]).is_err());
    assert!(write(&[partition(u32::MAX, 2)]).is_err());
    assert!(write(&[partition(1, 1); 5]).is_err());
}

/// Whether a host tool is installed. Missing on CI is a failure; elsewhere the test is
/// skipped with a note.
fn have_tool(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| d.join(tool).is_file())
    });
    if !found {
        let message =
            format!("host tool `{tool}` is missing: install it with `apt-get install {package}`");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("note: skipping: {message}");
    }
    found
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let program = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.into());
    let output = Command::new(&program).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn boot_partition_tree() -> BTreeMap<String, FatEntry> {
    BTreeMap::from([
        (
            "start4.elf".to_string(),
            file(&pseudo_random_bytes(2_300_000, 2)),
        ),
        (
            "config.txt".to_string(),
            file(b"arm_64bit=1\nkernel=vmlinuz-6.12.48+deb13-arm64\n"),
        ),
        (
            "cmdline.txt".to_string(),
            file(b"console=serial0,115200 root=LABEL=root\n"),
        ),
        (
            "bcm2711-rpi-4-b.dtb".to_string(),
            file(&pseudo_random_bytes(54_321, 3)),
        ),
        (
            "vmlinuz-6.12.48+deb13-arm64".to_string(),
            file(&pseudo_random_bytes(5_000_000, 4)),
        ),
        (
            "overlays/vc4-kms-v3d.dtbo".to_string(),
            file(&pseudo_random_bytes(3_333, 5)),
        ),
        ("cairn".to_string(), FatEntry::Dir),
    ])
}

fn assert_fsck_clean(image: &str) {
    let (ok, text) = run("fsck.vfat", &["-n", "-v", image]);
    assert!(ok, "fsck.vfat failed:\n{text}");
    for complaint in [
        "Fixing",
        "differ",
        "Free cluster",
        "Next free",
        "Warning",
        "wrong",
    ] {
        assert!(
            !text.contains(complaint),
            "fsck.vfat complains ({complaint}):\n{text}"
        );
    }
}

#[test]
fn reference_tools_read_the_filesystem() {
    if !(have_tool("fsck.vfat", "dosfstools") && have_tool("mdir", "mtools")) {
        return;
    }
    let entries = boot_partition_tree();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("boot.img");
    let image_str = image.to_str().unwrap();
    std::fs::write(&image, fat32(&config(64 * MIB), &entries)).unwrap();

    assert_fsck_clean(image_str);

    let (ok, root) = run("mdir", &["-i", image_str, "::"]);
    assert!(ok, "{root}");
    assert!(root.contains("Volume in drive : is CAIRN-BOOT"), "{root}");
    assert!(root.contains("Volume Serial Number is 1234-ABCD"), "{root}");
    assert!(root.contains("2023-11-14  22:13"), "{root}");
    for name in [
        "start4   elf",
        "config   txt",
        "cmdline  txt",
        "overlays",
        "cairn",
        " bcm2711-rpi-4-b.dtb",
        " vmlinuz-6.12.48+deb13-arm64",
        "5000000",
        "2300000",
    ] {
        assert!(root.contains(name), "{name:?} missing from mdir:\n{root}");
    }
    let (ok, overlays) = run("mdir", &["-i", image_str, "::/overlays"]);
    assert!(ok && overlays.contains(" vc4-kms-v3d.dtbo"), "{overlays}");
    let (ok, cairn) = run("mdir", &["-i", image_str, "::/cairn"]);
    assert!(ok && cairn.contains("2 files"), "{cairn}"); // "." and ".."

    let (ok, config_txt) = run("mtype", &["-i", image_str, "::/config.txt"]);
    assert!(ok);
    assert_eq!(
        config_txt.as_bytes(),
        b"arm_64bit=1\nkernel=vmlinuz-6.12.48+deb13-arm64\n"
    );
    for (name, copy) in [
        ("vmlinuz-6.12.48+deb13-arm64", "kernel"),
        ("overlays/vc4-kms-v3d.dtbo", "dtbo"),
    ] {
        let copied = dir.path().join(copy);
        let source = format!("::/{name}");
        let (ok, text) = run(
            "mcopy",
            &["-i", image_str, &source, copied.to_str().unwrap()],
        );
        assert!(ok, "{text}");
        let FatEntry::File(expected) = &entries[name] else {
            unreachable!()
        };
        assert!(
            std::fs::read(&copied).unwrap() == *expected,
            "{name} differs"
        );
    }

    if have_tool("blkid", "util-linux") {
        let (_, probe) = run("blkid", &["-p", image_str]);
        assert!(
            probe.contains("LABEL=\"CAIRN-BOOT\"") && probe.contains("UUID=\"1234-ABCD\""),
            "{probe}"
        );
    }
}

#[test]
fn full_filesystem_with_many_long_names_passes_fsck() {
    if !(have_tool("fsck.vfat", "dosfstools") && have_tool("mdir", "mtools")) {
        return;
    }
    let mut entries: BTreeMap<String, FatEntry> = (0..300)
        .map(|i| {
            (
                format!("deep/dir/Long File Name number {i:03}.data"),
                file(&[i as u8; 700]),
            )
        })
        .collect();
    entries.insert("deep/Makefile".to_string(), file(b"all:\n"));
    // More than 65525 one-sector clusters of content, so the smallest size that fits
    // leaves no cluster free (FSInfo's next-free hint is then "unknown").
    entries.insert("filler".to_string(), file(&vec![0xAA; 33 * MIB as usize]));
    let mut config = config(fat32_size_needed(&entries).unwrap());
    config.label = String::new();
    while write_fat32(&config, &entries, std::io::sink()).is_ok() {
        config.size_bytes -= 512;
    }
    config.size_bytes += 512;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("full.img");
    let image_str = image.to_str().unwrap();
    let bytes = fat32(&config, &entries);
    assert_eq!(
        &bytes[512 + 488..512 + 496],
        &[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF],
        "FSInfo"
    );
    std::fs::write(&image, bytes).unwrap();
    assert_fsck_clean(image_str);
    let (ok, listing) = run("mdir", &["-i", image_str, "::/deep/dir"]);
    assert!(
        ok && listing.contains(" Long File Name number 299.data"),
        "{listing}"
    );
    assert!(
        listing.contains("LONGFI~1 DAT") && listing.contains("LONGF~10 DAT"),
        "{listing}"
    );
    assert!(listing.contains("0 bytes free"), "{listing}");
    let (ok, deep) = run("mdir", &["-i", image_str, "::/deep"]);
    assert!(
        ok && deep.contains("MAKEFILE") && deep.contains("Makefile"),
        "{deep}"
    );
}

#[test]
fn sfdisk_and_mtools_read_the_disk_image() {
    if !(have_tool("sfdisk", "fdisk") && have_tool("mdir", "mtools")) {
        return;
    }
    let fat_start_lba = 8192u32;
    let fat_bytes = 40 * MIB;
    let root_sectors = 2048u32;
    let fat_sectors = (fat_bytes / 512) as u32;
    let partitions = [
        MbrPartition {
            start_lba: fat_start_lba,
            sectors: fat_sectors,
            kind: MBR_KIND_FAT32_LBA,
            bootable: true,
        },
        MbrPartition {
            start_lba: fat_start_lba + fat_sectors,
            sectors: root_sectors,
            kind: MBR_KIND_LINUX,
            bootable: false,
        },
    ];
    let mut disk = Vec::new();
    write_mbr(0xCA1F_0001, &partitions, &mut disk).unwrap();
    assert_eq!(disk.len(), 512);
    disk.resize(fat_start_lba as usize * 512, 0);
    let mut config = config(fat_bytes);
    config.hidden_sectors = fat_start_lba;
    write_fat32(&config, &boot_partition_tree(), &mut disk).unwrap();
    disk.resize(disk.len() + root_sectors as usize * 512, 0);

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let image_str = image.to_str().unwrap();
    std::fs::write(&image, &disk).unwrap();

    let (ok, dump) = run("sfdisk", &["--dump", image_str]);
    assert!(ok, "{dump}");
    assert!(
        dump.contains("label: dos") && dump.contains("label-id: 0xca1f0001"),
        "{dump}"
    );
    assert!(
        dump.contains("start=        8192, size=       81920, type=c, bootable"),
        "{dump}"
    );
    assert!(
        dump.contains("start=       90112, size=        2048, type=83\n"),
        "{dump}"
    );

    let fat_at = format!("{image_str}@@{}", fat_start_lba as u64 * 512);
    let (ok, listing) = run("mdir", &["-i", &fat_at, "::"]);
    assert!(
        ok && listing.contains(" vmlinuz-6.12.48+deb13-arm64"),
        "{listing}"
    );
}

/// A fixed-size file can be overwritten in place at the offset `file_offset` gives: the
/// filesystem stays clean and mtools reads the new bytes (how `flash` writes secrets).
#[test]
fn a_file_overwritten_at_its_offset_reads_back_through_mtools() {
    let mut entries = boot_partition_tree();
    let reserved = vec![b'\n'; 4096];
    entries.insert(
        "cairn-secrets.env".to_string(),
        FatEntry::File(reserved.clone()),
    );
    entries.insert("overlays/a-long-name.dtbo".to_string(), file(b"dtbo"));
    let config = config(64 * MIB);
    let mut bytes = fat32(&config, &entries);
    for (path, data) in [
        ("cairn-secrets.env", reserved.as_slice()),
        ("overlays/vc4-kms-v3d.dtbo", &pseudo_random_bytes(3_333, 5)),
        (
            "config.txt",
            b"arm_64bit=1\nkernel=vmlinuz-6.12.48+deb13-arm64\n",
        ),
    ] {
        let at = cairn_disk::fat::file_offset(&config, &entries, path)
            .unwrap()
            .unwrap_or_else(|| panic!("{path} has an offset")) as usize;
        assert_eq!(&bytes[at..at + data.len()], data, "{path} at {at}");
    }
    assert_eq!(
        cairn_disk::fat::file_offset(&config, &entries, "overlays").unwrap(),
        None,
        "a directory has no file offset"
    );
    assert_eq!(
        cairn_disk::fat::file_offset(&config, &entries, "missing").unwrap(),
        None
    );

    let at = cairn_disk::fat::file_offset(&config, &entries, "cairn-secrets.env")
        .unwrap()
        .unwrap() as usize;
    let mut secrets = b"join_token=abcdef.0123456789abcdef\n".to_vec();
    secrets.resize(4096, b'\n');
    bytes[at..at + 4096].copy_from_slice(&secrets);
    if !(have_tool("fsck.vfat", "dosfstools") && have_tool("mtype", "mtools")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("boot.img");
    std::fs::write(&image, &bytes).unwrap();
    let image_str = image.to_str().unwrap();
    assert_fsck_clean(image_str);
    let (ok, text) = run("mtype", &["-i", image_str, "::/cairn-secrets.env"]);
    assert!(ok, "{text}");
    assert_eq!(text.as_bytes(), &secrets[..]);
}
