//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/`, each started from a seed corpus
//! of real inputs (packages the lock pins, the suites' InRelease files, the host's dpkg
//! status and keyrings, the project's specs, what Cairn writes) and the committed crash inputs of `fuzz/regressions/`, run for
//! a fixed time. A crash fails the command, naming the input to reproduce it with.

use crate::Env;
use cairn_steps::Error;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The cargo-fuzz release `cargo xtask fuzz` installs (into `target/test-tools/`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target of `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: &[&str] = &[
    "deb",
    "deb822",
    "inrelease",
    "keyring",
    "www_authenticate",
    "spec_toml",
    "oci_manifest",
    "binaries",
    "fat_read",
    "cpio_roundtrip",
    "tar_roundtrip",
    "fat_roundtrip",
];

#[derive(clap::Args)]
pub struct Args {
    /// Targets to run (default: all of them)
    pub targets: Vec<String>,
    /// Seconds of fuzzing per target
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        let mut picked = Vec::new();
        for t in &args.targets {
            let Some(known) = TARGETS.iter().find(|k| *k == t) else {
                return Err(Error::msg(format!(
                    "no fuzz target {t:?}: the targets are {}",
                    TARGETS.join(", ")
                )));
            };
            picked.push(*known);
        }
        picked
    };
    run_targets(env, &targets, args.seconds)
}

/// Runs `targets` for `seconds` each and prints one line per target; fails on a crash.
pub fn run_targets(env: &Env, targets: &[&str], seconds: u64) -> Result<ExitCode, Error> {
    if seconds == 0 {
        // libFuzzer reads -max_total_time=0 as "no limit".
        return Err(Error::msg("fuzzing for 0 seconds: give at least 1"));
    }
    let root = &env.ctx.root;
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        return Err(Error::msg(format!(
            "{} has no fuzz/Cargo.toml: run `cargo xtask fuzz` in Cairn's own checkout",
            root.display()
        )));
    }
    let cargo_fuzz = cargo_fuzz(root)?;
    let work = root.join("target/fuzz");
    eprintln!("fuzz: building the targets (cargo-fuzz {CARGO_FUZZ_VERSION})");
    let status = fuzz_command(&cargo_fuzz, &fuzz_dir)
        .args(["build", "--sanitizer", "none"])
        .status()
        .map_err(|e| Error::at(cargo_fuzz.display(), e))?;
    if !status.success() {
        return Err(Error::msg("building the fuzz targets failed (see above)"));
    }
    // libFuzzer runs one thread: the targets run one per core, each line printed as its
    // target ends.
    let queue = std::sync::Mutex::new(targets.iter());
    let crashed = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = Run {
        env,
        cargo_fuzz: &cargo_fuzz,
        fuzz_dir: &fuzz_dir,
        work: &work,
        seconds,
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.min(targets.len()))
            .map(|_| {
                scope.spawn(|| -> Result<(), Error> {
                    loop {
                        let Some(target) = queue.lock().unwrap_or_else(|e| e.into_inner()).next()
                        else {
                            return Ok(());
                        };
                        if let Some(crash) = run.target(target)? {
                            crashed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(crash);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>, Error>>()
    })?;
    let mut crashed = crashed.into_inner().unwrap_or_else(|e| e.into_inner());
    crashed.sort();
    if crashed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Error::msg(format!(
            "fuzzing found crashes:\n  {}",
            crashed.join("\n  ")
        )))
    }
}

/// One target's run: its seeds laid into its corpus, libFuzzer for `seconds`.
struct Run<'a> {
    env: &'a Env,
    cargo_fuzz: &'a Path,
    fuzz_dir: &'a Path,
    work: &'a Path,
    seconds: u64,
}

impl Run<'_> {
    /// Runs `target` and prints its line; returns what to say of a crash.
    fn target(&self, target: &str) -> Result<Option<String>, Error> {
        let Run {
            env,
            cargo_fuzz,
            fuzz_dir,
            work,
            seconds,
        } = *self;
        let corpus = work.join("corpus").join(target);
        // Each run starts from the seeds; what libFuzzer adds stays for the next run.
        std::fs::create_dir_all(&corpus).map_err(|e| Error::at(corpus.display(), e))?;
        let seeds = seeds(env, target).map_err(|e| e.context(format!("seeds of {target}")))?;
        for (name, bytes) in &seeds {
            let path = corpus.join(format!("seed-{name}"));
            std::fs::write(&path, bytes).map_err(|e| Error::at(path.display(), e))?;
        }
        let regressions = fuzz_dir.join("regressions").join(target);
        let artifacts = work.join("artifacts").join(target);
        std::fs::create_dir_all(&artifacts).map_err(|e| Error::at(artifacts.display(), e))?;
        let max_len = seeds
            .iter()
            .map(|(_, b)| b.len())
            .max()
            .unwrap_or(0)
            .max(4096);
        let mut cmd = fuzz_command(&cargo_fuzz, &fuzz_dir);
        cmd.args(["run", "--sanitizer", "none", target])
            .arg(&corpus);
        if regressions.is_dir() {
            cmd.arg(&regressions);
        }
        let out = cmd
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-max_len={max_len}"))
            .arg("-rss_limit_mb=2048")
            .arg("-timeout=10")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::at(cargo_fuzz.display(), e))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        let log_path = work.join(format!("{target}.log"));
        std::fs::write(&log_path, &log).map_err(|e| Error::at(log_path.display(), e))?;
        let stat = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        if out.status.success() {
            println!(
                "{target:<18} ok     {:>11} runs  {:>6} seeds  coverage {:>5} edges  corpus {}",
                stat("number_of_executed_units"),
                seeds.len(),
                log.lines()
                    .rev()
                    .find_map(|l| l.split_once(" cov: "))
                    .and_then(|(_, r)| r.split_whitespace().next())
                    .unwrap_or("?"),
                std::fs::read_dir(&corpus).map_or(0, |d| d.count()),
            );
        } else {
            let input = log
                .lines()
                .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
                .unwrap_or("(none written)")
                .to_string();
            let why = log
                .lines()
                .find(|l| l.contains("panicked at") || l.contains("ERROR: libFuzzer"))
                .unwrap_or("see the log")
                .to_string();
            println!(
                "{target:<18} CRASH  {why}\n{:<18}        input: {input}\n{:<18}        log: {}",
                "",
                "",
                log_path.display()
            );
            return Ok(Some(format!(
                "{target} ({why}); reproduce with `RUSTC_BOOTSTRAP=1 {} fuzz run --fuzz-dir fuzz -s none {target} {input}`, then add the input under fuzz/regressions/{target}/ and a unit test beside the fix",
                cargo_fuzz.display()
            )));
        }
        Ok(None)
    }
}

/// cargo-fuzz with the flags it needs on the machine's stable toolchain: its coverage
/// options are accepted only with `RUSTC_BOOTSTRAP=1` (no nightly toolchain exists here).
fn fuzz_command(cargo_fuzz: &Path, fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(fuzz_dir.parent().expect("fuzz/ has a parent"));
    cmd
}

/// `target/test-tools/cargo-fuzz/bin/cargo-fuzz`, installed from crates.io when missing.
fn cargo_fuzz(root: &Path) -> Result<PathBuf, Error> {
    let dir = root.join("target/test-tools/cargo-fuzz");
    let bin = dir.join("bin/cargo-fuzz");
    let installed = Command::new(&bin)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if installed {
        return Ok(bin);
    }
    eprintln!(
        "fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        dir.display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            "--locked",
            "--quiet",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .arg("--root")
        .arg(&dir)
        .status()
        .map_err(|e| Error::at("cargo install cargo-fuzz", e))?;
    if !status.success() {
        return Err(Error::msg(format!(
            "cargo install cargo-fuzz {CARGO_FUZZ_VERSION} failed: the fuzz targets cannot run without it"
        )));
    }
    Ok(bin)
}

type Seeds = Vec<(String, Vec<u8>)>;

/// Real inputs for `target`; an error when a parser's target would start from nothing.
fn seeds(env: &Env, target: &str) -> Result<Seeds, Error> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::at(p.display(), e));
    let mut out: Seeds = Vec::new();
    match target {
        "deb" => {
            for (p, path) in small_debs(env, 6)? {
                out.push((p.name.clone(), read(&path)?));
            }
        }
        "deb822" => {
            let status = read(Path::new("/var/lib/dpkg/status"))?;
            let text = String::from_utf8_lossy(&status);
            for (i, para) in text.split("\n\n").take(8).enumerate() {
                out.push((format!("dpkg-status-{i}"), format!("{para}\n").into_bytes()));
            }
            for (p, path) in small_debs(env, 6)? {
                let file = std::fs::File::open(&path)
                    .map_err(|e| Error::at(path.display(), e))?;
                let info = cairn_debian::unpack_data(file, &p.name, |_, _| Ok(()))?;
                out.push((format!("control-{}", p.name), info.control.into_bytes()));
            }
        }
        "inrelease" => {
            // The InRelease of each suite the lock names, from the mirror, as `lock` reads it.
            let lock = crate::read_lock(env)?;
            let mut suites: Vec<&str> = lock.image.iter().map(|i| i.suite.as_str()).collect();
            suites.sort();
            suites.dedup();
            let mirror = cairn_inputs::mirror::resolve(None)?;
            for suite in suites {
                let url = format!("{mirror}/dists/{suite}/InRelease");
                out.push((format!("{suite}-InRelease"), cairn_inputs::fetch::get_bytes(&url)?));
            }
            // And the host's, when apt keeps some.
            let lists = Path::new("/var/lib/apt/lists");
            let mut files: Vec<PathBuf> = std::fs::read_dir(lists)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with("_InRelease"))
                .collect();
            files.sort();
            for (i, f) in files.iter().take(2).enumerate() {
                out.push((format!("host-{i}"), read(f)?));
            }
        }
        "keyring" => {
            let dir = Path::new("/usr/share/keyrings");
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| Error::at(dir.display(), e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("debian-archive-"))
                })
                .collect();
            files.sort();
            for f in files {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, read(&f)?));
            }
        }
        "www_authenticate" => {
            for (i, s) in [
                r#"Basic realm="Harbor Registry""#,
                r#"Bearer realm="https://harbor.example.lan/service/token",service="harbor-registry",scope="repository:homelab/haproxy:pull,push""#,
                r#"Bearer realm="http://127.0.0.1:5001/token",service="cairn-test-registry",scope="repository:a/b:pull",error="insufficient_scope""#,
                r#"Basic realm="x", Bearer realm="y""#,
                r#"{"token":"eyJhbGciOi","expires_in":300,"issued_at":"2026-11-30T00:00:00Z"}"#,
                r#"{"access_token":"abc","token":"abc","expires_in":60}"#,
            ]
            .iter()
            .enumerate()
            {
                out.push((format!("header-{i}"), s.as_bytes().to_vec()));
            }
        }
        "spec_toml" => {
            for dir in ["nodes", "images", "examples/kubeadm/nodes"] {
                let dir = env.ctx.root.join(dir);
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                let mut files: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                files.sort();
                for f in files {
                    let name = f
                        .strip_prefix(&env.ctx.root)
                        .unwrap_or(&f)
                        .to_string_lossy()
                        .replace('/', "-");
                    out.push((name, read(&f)?));
                }
            }
        }
        "oci_manifest" => {
            // What Cairn writes is what a registry or a bundle hands back.
            use cairn_oci as oci;
            let layer = oci::descriptor(
                oci::OciMediaType::ImageLayerGzip,
                cairn_formats::Digest::of(b"layer"),
                5,
            );
            let config = oci::descriptor(
                oci::OciMediaType::ImageConfig,
                cairn_formats::Digest::of(b"config"),
                6,
            );
            let manifest = oci::image_manifest(config, vec![layer], &Default::default());
            let index = oci::image_index(
                vec![oci::descriptor(
                    oci::OciMediaType::ImageManifest,
                    manifest.digest,
                    manifest.size(),
                )],
                &Default::default(),
            );
            out.push(("manifest".into(), manifest.bytes));
            out.push(("index".into(), index.bytes));
            // And what the project's store holds, when it holds something.
            let blobs = env.ctx.store.join("blobs/sha256");
            if let Ok(entries) = std::fs::read_dir(&blobs) {
                let mut small: Vec<(String, PathBuf)> = entries
                    .flatten()
                    .filter(|e| e.metadata().is_ok_and(|m| m.len() <= 64 << 10))
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                    .collect();
                small.sort();
                for (name, p) in small {
                    let bytes = read(&p)?;
                    if bytes.first() == Some(&b'{') && out.len() < 24 {
                        out.push((name, bytes));
                    }
                }
            }
        }
        "binaries" => {
            // Programs and libraries of small packages, a kernel module and device trees
            // of the arm64 kernel the nodes boot, and an MBR as Cairn writes it.
            for (p, path) in small_debs(env, 12)? {
                let file = std::fs::File::open(&path)
                    .map_err(|e| Error::at(path.display(), e))?;
                let mut found = 0;
                cairn_debian::unpack_data(file, &p.name, |entry, r| {
                    let mut head = [0u8; 4];
                    let mut bytes = Vec::new();
                    r.take(128 << 10).read_to_end(&mut bytes)?;
                    head.copy_from_slice(bytes.get(..4).unwrap_or(&[0; 4]));
                    if found < 2 && &head == b"\x7fELF" && bytes.len() < 128 << 10 {
                        found += 1;
                        out.push((format!("{}-{}", p.name, entry.path.replace('/', "-")), bytes));
                    }
                    Ok(())
                })?;
            }
            out.extend(kernel_seeds(env)?);
            let mut mbr = Vec::new();
            cairn_disk::mbr::write_mbr(
                0x1234_5678,
                &[
                    cairn_disk::mbr::MbrPartition {
                        start_lba: 8192,
                        sectors: 262_144,
                        kind: cairn_disk::mbr::MBR_KIND_FAT32_LBA,
                        bootable: true,
                    },
                    cairn_disk::mbr::MbrPartition {
                        start_lba: 270_336,
                        sectors: 1_000_000,
                        kind: cairn_disk::mbr::MBR_KIND_LINUX,
                        bootable: false,
                    },
                ],
                &mut mbr,
            )
            .map_err(|e| Error::other(e))?;
            out.push(("mbr".into(), mbr));
        }
        "fat_read" => {
            // A boot partition as Cairn writes it, cut to its first MiB (boot sector, FSInfo,
            // both FATs, the root directory and these small files all lie inside it).
            use cairn_disk::fat::{FatConfig, FatEntry};
            let mut entries = std::collections::BTreeMap::new();
            entries.insert("kernel8.img".to_string(), FatEntry::File(vec![0xAB; 3000]));
            entries.insert("cmdline.txt".to_string(), FatEntry::File(b"console=tty1 root=PARTUUID=12345678-02\n".to_vec()));
            entries.insert("bcm2711-rpi-4-b.dtb".to_string(), FatEntry::File(vec![0xD0; 700]));
            entries.insert("overlays".to_string(), FatEntry::Dir);
            let size = cairn_disk::fat::fat32_size_needed(&entries)
                .map_err(|e| Error::other(e))?;
            let config = FatConfig {
                size_bytes: size,
                volume_id: 0x1234_5678,
                label: "CAIRN".into(),
                hidden_sectors: 8192,
                mtime: 1_700_000_000,
            };
            let mut image = Vec::new();
            cairn_disk::fat::write_fat32(&config, &entries, &mut image)
                .map_err(|e| Error::other(e))?;
            image.truncate(1 << 20);
            out.push(("boot-partition".into(), image));
        }
        // Round trips build their input from the fuzzer's bytes: no seeds needed.
        _ => {}
    }
    let parses_outside_input =
        !matches!(target, "cpio_roundtrip" | "tar_roundtrip" | "fat_roundtrip");
    if parses_outside_input && out.is_empty() {
        return Err(Error::msg(format!("no seed input found for {target}")));
    }
    Ok(out)
}

/// The `n` smallest packages of the lock, fetched into the download cache when missing
/// (each is pinned by sha256).
fn small_debs(
    env: &Env,
    n: usize,
) -> Result<Vec<(cairn_inputs::lockfile::LockedPackage, PathBuf)>, Error> {
    let lock = crate::read_lock(env)?;
    let mut packages = lock.package.clone();
    packages.sort_by(|a, b| (a.size, &a.name, &a.arch).cmp(&(b.size, &b.name, &b.arch)));
    packages.truncate(n);
    fetch(env, packages)
}

fn fetch(
    env: &Env,
    packages: Vec<cairn_inputs::lockfile::LockedPackage>,
) -> Result<Vec<(cairn_inputs::lockfile::LockedPackage, PathBuf)>, Error> {
    let cache = cairn_inputs::fetch::Cache::new(&env.ctx.cache);
    let mut mirror = None;
    let mut out = Vec::new();
    for p in packages {
        let sha256 = cairn_formats::Digest::from_hex(&p.sha256)
            .map_err(|_| Error::msg(format!("inputs.lock: {} has a bad sha256", p.name)))?;
        let path = if cache.has(&sha256) {
            cache.path(&sha256)
        } else {
            if mirror.is_none() {
                mirror = Some(cairn_inputs::mirror::resolve(None)?);
            }
            cache.fetch(
                &cairn_inputs::fetch::Download {
                    name: format!("{} {} {}", p.name, p.version, p.arch),
                    url: format!("{}/{}", mirror.as_deref().unwrap_or_default(), p.path),
                    sha256,
                    size: Some(p.size),
                },
                &|_| (),
            )?
        };
        out.push((p, path));
    }
    Ok(out)
}

/// Two small modules (decompressed) and two device trees of the lock's arm64 kernel.
fn kernel_seeds(env: &Env) -> Result<Seeds, Error> {
    let lock = crate::read_lock(env)?;
    let Some(kernel) = lock
        .package
        .iter()
        .filter(|p| p.name.starts_with("linux-image-") && p.arch == "arm64")
        // The kernel itself, not the small package that depends on it.
        .max_by_key(|p| p.size)
        .cloned()
    else {
        return Err(Error::msg(
            "inputs.lock pins no arm64 kernel (linux-image-*)",
        ));
    };
    let (p, path) = fetch(env, vec![kernel])?.remove(0);
    let file = std::fs::File::open(&path).map_err(|e| Error::at(path.display(), e))?;
    let mut out: Seeds = Vec::new();
    let (mut modules, mut dtbs) = (0, 0);
    let result = cairn_debian::unpack_data(file, &p.name, |entry, r| {
        let name = entry.path.rsplit('/').next().unwrap_or("").to_string();
        if modules < 2 && name.ends_with(".ko.xz") {
            let mut packed = Vec::new();
            r.take(64 << 10).read_to_end(&mut packed)?;
            let mut module = Vec::new();
            if liblzma::read::XzDecoder::new(&packed[..])
                .read_to_end(&mut module)
                .is_ok()
                && module.len() < 128 << 10
            {
                modules += 1;
                out.push((name.trim_end_matches(".xz").to_string(), module));
            }
        } else if dtbs < 2 && name.starts_with("bcm27") && name.ends_with(".dtb") {
            let mut dtb = Vec::new();
            r.read_to_end(&mut dtb)?;
            dtbs += 1;
            out.push((name, dtb));
        }
        if modules == 2 && dtbs == 2 {
            // Enough: stop walking the kernel's data.tar.
            return Err(std::io::Error::other("seeded"));
        }
        Ok(())
    });
    if modules < 2 || dtbs < 2 {
        result?;
        return Err(Error::msg(format!(
            "{}: found {modules} small modules and {dtbs} bcm27* device trees, wanted 2 each",
            p.name
        )));
    }
    Ok(out)
}
