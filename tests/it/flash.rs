//! `flash`: a node's SD image onto an image file and onto real block devices (loop devices
//! the test makes), with secrets written into the card's reserved file and never into the
//! store. Independent tools read the result (mtools, sfdisk, bmaptool with the artifact's
//! bmap), and every refusal happens before a byte is written.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use support::{copy_project, json, pin_stand_ins, require_tool, run_err, run_ok, xtask};

struct Built {
    dir: PathBuf,
    image: PathBuf,
    image_size: u64,
    bmap: PathBuf,
    secrets_offset: usize,
}

/// pi-worker built once in a copy of the project.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("cairn-flash-")
            .tempdir()
            .unwrap()
            .keep();
        copy_project(&dir);
        pin_stand_ins(&dir);
        let out = json(&run_ok(xtask(&dir).args([
            "build-node",
            "pi-worker",
            "--json",
        ])));
        let node = &out["nodes"][0];
        let file = |title: &str| PathBuf::from(node["files"][title]["path"].as_str().unwrap());
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                dir.join("artifacts/blobs/sha256")
                    .join(&node["manifest"]["digest"].as_str().unwrap()[7..]),
            )
            .unwrap(),
        )
        .unwrap();
        Built {
            image: file("pi-worker.img"),
            image_size: node["files"]["pi-worker.img"]["size"].as_u64().unwrap(),
            bmap: file("pi-worker.img.bmap"),
            secrets_offset: manifest["annotations"]["dev.cairn.secrets.offset"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            dir,
        }
    })
}

const SECRETS: &str = "# pi-worker\njoin_token=q7zt3x.k4m9p2w8r6v1n5b3\nca_cert_hash=sha256:5f4dcc3b5aa765d61d8327deb882cf99e1c7a4f3b6d2a8e9f0c1b2d3e4f5a6b7\n";

fn secrets_file(dir: &Path) -> PathBuf {
    let path = dir.join("secrets.env");
    std::fs::write(&path, SECRETS).unwrap();
    path
}

/// The reserved area as flash writes it: the secrets padded with newlines to 4096 bytes.
fn padded(secrets: &str) -> Vec<u8> {
    let mut b = secrets.as_bytes().to_vec();
    b.resize(4096, b'\n');
    b
}

fn mtype(image: &Path, path: &str) -> Vec<u8> {
    let out = Command::new(require_tool("mtype", "mtools"))
        .arg("-i")
        .arg(format!("{}@@4M", image.display()))
        .arg(format!("::/{path}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn flash_to_a_file_writes_the_secrets_on_the_card_only_and_skips_free_space() {
    let b = built();
    let work = tempfile::tempdir().unwrap();
    let secrets = secrets_file(work.path());
    let image = std::fs::read(&b.image).unwrap();

    // An existing file is replaced only with --force, and then holds exactly the image.
    let card = work.path().join("card.img");
    std::fs::write(&card, vec![0xAAu8; image.len()]).unwrap();
    let err = run_err(
        xtask(&b.dir)
            .args(["flash", "pi-worker", "--file"])
            .arg(&card),
    );
    assert!(err.contains("exists: pass --force"), "{err}");
    assert_eq!(std::fs::read(&card).unwrap()[0], 0xAA, "left as it was");
    let report = json(&run_ok(
        xtask(&b.dir)
            .args(["flash", "pi-worker", "--force", "--json", "--file"])
            .arg(&card)
            .arg("--secrets")
            .arg(&secrets),
    ));
    assert_eq!(report["secrets"], true);
    assert_eq!(report["verified"], true);
    let written = report["bytes_written"].as_u64().unwrap();
    assert!(
        written < b.image_size && report["bytes_skipped"].as_u64().unwrap() > 4 << 20,
        "free space is skipped: {report}"
    );
    // It holds the secrets: only its owner may read it, whatever the umask.
    let mode = std::fs::metadata(&card).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let flashed = std::fs::read(&card).unwrap();
    assert_eq!(flashed.len(), image.len());
    let at = b.secrets_offset;
    assert_eq!(&flashed[at..at + 4096], &padded(SECRETS)[..]);
    assert!(
        String::from_utf8_lossy(&image[at..at + 4096])
            .starts_with("# Cairn: no secrets on this card yet"),
        "the store's image holds only the note"
    );
    assert!(
        flashed[..at] == image[..at] && flashed[at + 4096..] == image[at + 4096..],
        "the file is the image but for the secrets"
    );
    assert_eq!(mtype(&card, "cairn-secrets.env"), padded(SECRETS));
    assert_eq!(
        mtype(&card, "cmdline.txt"),
        mtype(&b.image, "cmdline.txt"),
        "mtools reads the rest of the boot partition"
    );
    let sfdisk = run_ok(
        Command::new(require_tool("sfdisk", "fdisk"))
            .arg("--json")
            .arg(&card),
    );
    assert_eq!(
        json(&sfdisk)["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Nothing of the secrets reached the store, which still verifies.
    let store = b.dir.join("artifacts");
    for entry in std::fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(24).any(|w| w == b"q7zt3x.k4m9p2w8r6v1n5b3\n"),
            "a secret is in the store"
        );
    }
    run_ok(xtask(&b.dir).args(["store", "verify"]));

    // Flashed again without secrets, the card holds the note again.
    run_ok(
        xtask(&b.dir)
            .args(["flash", "pi-worker", "--force", "--file"])
            .arg(&card),
    );
    assert_eq!(mtype(&card, "cairn-secrets.env"), &image[at..at + 4096]);

    // bmaptool, with the artifact's bmap, copies exactly the image (it checks every range's
    // sha256 and the bmap's own).
    let copy = work.path().join("bmaptool.img");
    run_ok(
        Command::new(require_tool("bmaptool", "bmap-tools"))
            .args(["copy", "--bmap"])
            .arg(&b.bmap)
            .arg(&b.image)
            .arg(&copy),
    );
    assert!(
        std::fs::read(&copy).unwrap() == image,
        "bmaptool's copy is the image"
    );
}

/// A loop device over a sparse file of `size` bytes, detached on drop.
struct Loop {
    device: String,
    _file: tempfile::NamedTempFile,
}

impl Loop {
    fn new(size: u64, partitions: bool) -> Loop {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size).unwrap();
        let mut cmd = Command::new(require_tool("losetup", "mount"));
        cmd.args(["--find", "--show"]);
        if partitions {
            cmd.arg("--partscan");
        }
        let device = run_ok(cmd.arg(file.path())).trim().to_string();
        assert!(device.starts_with("/dev/loop"), "{device}");
        Loop {
            device,
            _file: file,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn flash_device(device: &str, extra: &[&str]) -> Command {
    let mut c = xtask(&built().dir);
    c.args(["flash", "pi-worker", "--device", device])
        .args(extra);
    c
}

#[test]
#[ignore = "slow: loop devices, builds from the Debian mirror"]
fn bad_targets_and_secrets_are_refused_before_a_byte_is_written() {
    let b = built();
    let work = tempfile::tempdir().unwrap();
    let secrets = secrets_file(work.path());

    // Not a block device.
    let plain = work.path().join("not-a-device");
    std::fs::write(&plain, b"keep").unwrap();
    let err = run_err(&mut flash_device(plain.to_str().unwrap(), &[]));
    assert!(err.contains("is not a block device: use --file"), "{err}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep");

    // Bad secrets files.
    let big = work.path().join("big.env");
    std::fs::write(&big, format!("join_token={}\n", "x".repeat(5000))).unwrap();
    let no_kv = work.path().join("nokv.env");
    std::fs::write(&no_kv, "# only a comment\n").unwrap();
    let not_kv = work.path().join("notkv.env");
    std::fs::write(&not_kv, "join_token=abc\njust a token\n").unwrap();
    let crlf = work.path().join("crlf.env");
    std::fs::write(&crlf, "join_token=abcdef.0123456789abcdef\r\n").unwrap();
    let spaced = work.path().join("spaced.env");
    std::fs::write(&spaced, "join_token=abc $(reboot)\n").unwrap();
    // What the node could not use (it would stop at boot, on its console).
    let named = |name: &str, text: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let target = work.path().join("t.img");
    for (file, says) in [
        (
            named("token.env", "token=abc\n"),
            "the secrets of node pi-worker: ",
        ),
        (
            named("token.env", "token=abc\n"),
            "token.env:1: unknown key token; a node reads join_token and ca_cert_hash",
        ),
        (
            named("upper.env", "JOIN_TOKEN=abc\n"),
            "upper.env:1: unknown key JOIN_TOKEN (keys are lower case: join_token)",
        ),
        (
            named("empty.env", "join_token=\n"),
            "empty.env:1: join_token is empty",
        ),
        (
            named("twice.env", "join_token=abc\njoin_token=abd\n"),
            "twice.env:2: join_token again (first on line 1): keep one",
        ),
        (big.clone(), "the card reserves 4096 for secrets"),
        (no_kv.clone(), "nokv.env: no join_token: every node joins"),
        (not_kv.clone(), "notkv.env:2: not a KEY=value line"),
        (crlf.clone(), "crlf.env:1: a carriage return"),
        (
            spaced.clone(),
            "spaced.env:1: the value of join_token holds a space",
        ),
        (work.path().join("missing.env"), "missing.env"),
    ] {
        let err = run_err(
            xtask(&b.dir)
                .args(["flash", "pi-worker", "--file"])
                .arg(&target)
                .arg("--secrets")
                .arg(&file),
        );
        assert!(err.contains(says), "{err}");
        assert!(!target.exists(), "nothing written for {}", file.display());
    }
    let err = run_err(
        xtask(&b.dir)
            .args(["flash", "no-such-node", "--file"])
            .arg(&target),
    );
    assert!(err.contains("the store has no node no-such-node"), "{err}");
    let nowhere = work.path().join("no-such-dir/card.img");
    let err = run_err(
        xtask(&b.dir)
            .args(["flash", "pi-worker", "--file"])
            .arg(&nowhere),
    );
    assert!(
        err.contains(&format!(
            "the directory {} does not exist: create it",
            work.path().join("no-such-dir").display()
        )),
        "{err}"
    );

    // Block devices: loop devices the test makes.
    let small = Loop::new(64 << 20, false);
    let err = run_err(xtask(&b.dir).args(["flash", "pi-worker", "--file", &small.device]));
    assert!(err.contains("is a block device: use --device"), "{err}");
    let err = run_err(&mut flash_device(&small.device, &[]));
    assert!(
        err.contains("does not say it is removable") && err.contains("--force"),
        "{err}"
    );
    let err = run_err(&mut flash_device(&small.device, &["--force"]));
    assert!(
        err.contains(&format!(
            "holds {} bytes, the image needs {}",
            64 << 20,
            b.image_size
        )),
        "{err}"
    );

    // A partition, not the whole card.
    let parted = Loop::new(b.image_size + (64 << 20), true);
    let mut sfdisk = Command::new(require_tool("sfdisk", "fdisk"));
    sfdisk
        .arg(&parted.device)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = sfdisk.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n,32M,c\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let _ = Command::new("partx").args(["-u", &parted.device]).status();
    let part = format!("{}p1", parted.device);
    for _ in 0..50 {
        if Path::new(&part).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let err = run_err(&mut flash_device(&part, &["--force"]));
    assert!(
        err.contains("is a partition: flash the whole card"),
        "{err}"
    );

    // Mounted (through one of its partitions).
    run_ok(Command::new(require_tool("mkfs.ext4", "e2fsprogs")).args(["-q", "-F", &part]));
    let mnt = tempfile::tempdir().unwrap();
    run_ok(Command::new("mount").arg(&part).arg(mnt.path()));
    let err = run_err(&mut flash_device(&parted.device, &["--force"]));
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert!(
        err.contains("is mounted") && err.contains("unmount it first"),
        "{err}"
    );

    // In use: another program holds it open exclusively.
    let big_enough = Loop::new(b.image_size + (16 << 20), false);
    {
        use std::os::unix::fs::OpenOptionsExt;
        const O_EXCL: i32 = 0o200;
        let _held = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_EXCL)
            .open(&big_enough.device)
            .unwrap();
        let err = run_err(&mut flash_device(&big_enough.device, &["--force"]));
        assert!(err.contains("is in use"), "{err}");
    }

    // And once free, it is written and verified, secrets included.
    let report = json(&run_ok(
        flash_device(&big_enough.device, &["--force", "--json", "--secrets"]).arg(&secrets),
    ));
    assert_eq!(report["verified"], true);
    let mut on_device = vec![0u8; 4096];
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut d = std::fs::File::open(&big_enough.device).unwrap();
        d.seek(SeekFrom::Start(b.secrets_offset as u64)).unwrap();
        d.read_exact(&mut on_device).unwrap();
    }
    assert_eq!(on_device, padded(SECRETS));
}

/// A store whose copy of the image rotted: the flash stops before the partition table is
/// written, so the card cannot boot half-damaged bytes, and says what to do.
#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn a_damaged_image_in_the_store_never_becomes_a_bootable_card() {
    let b = built();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(b.dir.join("artifacts"))
            .arg(&store),
    );
    let blob = store
        .join("blobs/sha256")
        .join(b.image.file_name().unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let card = work.path().join("card.img");
    let err = run_err(
        support::xtask_store(&b.dir, &store)
            .args(["flash", "pi-worker", "--file"])
            .arg(&card),
    );
    assert!(
        err.contains("is damaged") && err.contains("store verify --repair"),
        "{err}"
    );
    assert!(
        !card.exists(),
        "a refused flash --file leaves no image file behind"
    );
}
