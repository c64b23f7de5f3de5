//! `cargo xtask test`: make sure the host tools the tests use are there (installing them
//! with apt-get when possible), run every test of the workspace, both tiers (the fast one
//! plain `cargo test` runs, and the slow one it lists as ignored), then the fuzz targets.

use crate::Env;
use cairn_steps::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus, Stdio};

#[derive(clap::Args)]
pub struct Args {
    /// Never install anything; fail naming what is missing
    #[arg(long)]
    pub no_install: bool,
    /// Rebuild the example images and nodes and rewrite tests/expected-digests.toml with
    /// their digests, instead of running every test (a deliberate step: after a
    /// BUILDER_VERSION bump or a change of the lock)
    #[arg(long)]
    pub update_digests: bool,
    /// Seconds each fuzz target runs after the tests (`cargo xtask fuzz`); the fuzzing
    /// runs only when every test ran (no extra `cargo test` arguments)
    #[arg(long, default_value_t = 15)]
    pub fuzz_seconds: u64,
    /// Extra arguments for `cargo test` (after `--`)
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

/// (what must exist, Debian package that provides it)
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("faketime", "faketime"),
    ("gzip", "gzip"),
    ("tar", "tar"),
    ("cpio", "cpio"),
    ("unsquashfs", "squashfs-tools"),
    ("depmod", "kmod"),
    ("dpkg-query", "dpkg"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    // The iPXE ROM QEMU loads for virtio-net-pci (PXE boot tests).
    ("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"),
    ("qemu-img", "qemu-utils"),
    ("fsck.vfat", "dosfstools"),
    ("mdir", "mtools"),
    ("sfdisk", "fdisk"),
    ("docker-registry", "docker-registry"),
    ("htpasswd", "apache2-utils"),
    ("openssl", "openssl"),
    ("shellcheck", "shellcheck"),
    ("bmaptool", "bmap-tools"),
    ("losetup", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("dnsmasq", "dnsmasq-base"),
    ("ip", "iproute2"),
    ("curl", "curl"),
    ("python3", "python3"),
    ("systemd-analyze", "systemd"),
    // Keys and cleartext signatures for the signed test repositories.
    ("gpg", "gpg"),
    ("gpg-agent", "gpg-agent"),
    ("gpgconf", "gpgconf"),
    // libfuzzer-sys builds libFuzzer's C++ sources (`cargo xtask fuzz`).
    ("g++", "g++"),
    (
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        "debian-archive-keyring",
    ),
];

fn present(what: &str) -> bool {
    if what.ends_with("debian-archive-keyring.gpg") {
        if let Some(k) = std::env::var_os(cairn_inputs::lock::KEYRING_ENV).filter(|k| !k.is_empty())
        {
            return Path::new(&k).exists();
        }
    }
    if what.starts_with('/') {
        return Path::new(what).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(what).is_file()))
}

fn missing_packages() -> Vec<&'static str> {
    let mut pkgs: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|(what, _)| !present(what))
        .map(|(_, pkg)| *pkg)
        .collect();
    pkgs.dedup();
    pkgs
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn install(pkgs: &[&str]) -> Result<(), Error> {
    let apt = |args: &[&str]| -> Result<(), Error> {
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let status = cmd.status().map_err(|e| Error::at("running apt-get", e))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::msg(format!("apt-get {} failed", args.join(" "))))
        }
    };
    eprintln!("installing host tools the tests use: {}", pkgs.join(" "));
    // On bookworm, QEMU comes from bookworm-backports, matching the qemu-utils that the
    // machine images carry from there; the suite is added with the host's own mirror.
    let is_qemu = |p: &&str| p.starts_with("qemu-") || *p == "ipxe-qemu";
    let backports = pkgs.iter().any(is_qemu) && add_bookworm_backports()?;
    apt(&["update", "-q"])?;
    let (qemu, rest): (Vec<&str>, Vec<&str>) = pkgs.iter().partition(|p| is_qemu(p));
    if !rest.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(rest);
        apt(&args)?;
    }
    if !qemu.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        if backports {
            args.extend(["-t", "bookworm-backports"]);
        }
        args.extend(qemu);
        apt(&args)?;
    }
    Ok(())
}

/// Adds bookworm-backports (with the mirror of the host's Debian source) on a bookworm host.
/// Returns whether the suite is configured.
fn add_bookworm_backports() -> Result<bool, Error> {
    let version = std::fs::read_to_string("/etc/debian_version").unwrap_or_default();
    if !version.starts_with("12") {
        return Ok(false);
    }
    let file = Path::new("/etc/apt/sources.list.d/cairn-bookworm-backports.sources");
    let already = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("bookworm-backports")))
        || std::fs::read_to_string("/etc/apt/sources.list")
            .is_ok_and(|t| t.contains("bookworm-backports"));
    if already {
        return Ok(true);
    }
    let mirror =
        cairn_inputs::mirror::from_apt_sources(Path::new("/etc/apt")).ok_or_else(|| {
            Error::msg(
                "cannot add bookworm-backports for QEMU: no Debian mirror in the apt sources",
            )
        })?;
    let text = format!(
        "Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    std::fs::write(file, text).map_err(|e| Error::at(file.display(), e))?;
    Ok(true)
}

/// The SPDX project's validator (`pyspdxtools`, from PyPI) that the SBOM tests run, in a
/// virtual environment under `target/`; made on first use. Returns its `bin` directory.
const SPDX_TOOLS: &str = "spdx-tools==0.8.5";

fn spdx_tools(root: &Path, can_install: bool) -> Result<std::path::PathBuf, Error> {
    let venv = root.join("target/test-tools/spdx");
    let bin = venv.join("bin");
    if bin.join("pyspdxtools").is_file() {
        return Ok(bin);
    }
    let make_venv = || {
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !make_venv() {
        // Debian splits venv (ensurepip) out of python3.
        if !can_install {
            return Err(Error::msg(
                "the SBOM tests need a Python virtual environment: install it with `apt-get install python3-venv`",
            ));
        }
        install(&["python3-venv"])?;
        if !make_venv() {
            return Err(Error::msg(format!(
                "`python3 -m venv {}` failed even with python3-venv installed",
                venv.display()
            )));
        }
    }
    eprintln!(
        "installing {SPDX_TOOLS} (the SPDX validator) into {}",
        venv.display()
    );
    let ok = Command::new(bin.join("python"))
        .args(["-m", "pip", "install", "--quiet", SPDX_TOOLS])
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !bin.join("pyspdxtools").is_file() {
        return Err(Error::msg(format!(
            "could not install {SPDX_TOOLS} from the Python package index into {}: the SBOM tests validate with its pyspdxtools",
            venv.display()
        )));
    }
    Ok(bin)
}

/// ORAS, the OCI registry client the referrers tests read with (`oras discover`): not in
/// bookworm, so trixie's .deb, pinned here by the sha256 of the mirror's Packages entry,
/// fetched from the host's Debian mirror and unpacked under `target/`. Returns its `bin`.
const ORAS_DEB: (&str, &str) = (
    "pool/main/o/oras/oras_1.2.0-1+b9_amd64.deb",
    "5f138419f0e4bc128ee4717b06190dc5770cf120ab7e3a991e5b3e9158f3189e",
);

fn oras_tool(env: &Env) -> Result<std::path::PathBuf, Error> {
    let bin = env.ctx.root.join("target/test-tools/oras/bin");
    if bin.join("oras").is_file() {
        return Ok(bin);
    }
    if std::env::consts::ARCH != "x86_64" {
        return Err(Error::msg(format!(
            "the referrers tests read with oras, pinned for amd64 hosts only: install oras (Debian trixie's) on this {} host",
            std::env::consts::ARCH
        )));
    }
    let (path, sha256) = ORAS_DEB;
    let mirror = cairn_inputs::mirror::resolve(None)?;
    let cache = cairn_inputs::fetch::Cache::new(&env.ctx.cache);
    let download = cairn_inputs::fetch::Download {
        name: "oras (test tool)".into(),
        url: format!("{mirror}/{path}"),
        sha256: cairn_formats::Digest::from_hex(sha256).expect("pinned hex"),
        size: None,
    };
    let deb = cache.fetch(&download, &|_| ())?;
    std::fs::create_dir_all(&bin).map_err(|e| Error::at(bin.display(), e))?;
    let file = std::fs::File::open(&deb).map_err(|e| Error::at(deb.display(), e))?;
    let tmp = bin.join(".oras.tmp");
    cairn_debian::deb::unpack_data(file, "oras", |entry, r| {
        if entry.path == "usr/bin/oras" {
            let mut out = std::fs::File::create(&tmp)?;
            std::io::copy(r, &mut out)?;
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        Ok(())
    })
    .map_err(|e| Error::at(format!("unpacking {path}"), e))?;
    std::fs::rename(&tmp, bin.join("oras"))
        .map_err(|e| Error::at(format!("{path} holds no usr/bin/oras"), e))?;
    Ok(bin)
}

/// `cargo test` arguments that run the slow tier too: the tests marked
/// `#[ignore = "slow: …"]` (QEMU, the real mirror, loop devices, network namespaces) run
/// beside the fast ones; plain `cargo test` leaves them out and lists them as ignored.
fn with_slow_tier(cargo_args: &[String]) -> Vec<String> {
    let mut out = cargo_args.to_vec();
    match out.iter().position(|a| a == "--") {
        Some(at) => out.insert(at + 1, "--include-ignored".into()),
        None => out.extend(["--".into(), "--include-ignored".into()]),
    }
    out
}

/// Runs `cargo`, passing its standard output through unchanged, and prints to stderr
/// when each test ended (seconds since `started`, and since the test before it ended): a
/// CI log says where the time went, even for a run cut off. (libtest's own `--report-time` needs `RUSTC_BOOTSTRAP`,
/// which rebuilds everything.)
fn run_timed(cargo: &mut Command, started: std::time::Instant) -> Result<ExitStatus, Error> {
    let mut child = cargo
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::at("running cargo test", e))?;
    let mut before = 0;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).split(b'\n') {
            let line = line.map_err(|e| Error::at("cargo test's output", e))?;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&line);
            let _ = stdout.write_all(b"\n");
            let _ = stdout.flush();
            let text = String::from_utf8_lossy(&line);
            let result = text
                .strip_prefix("test ")
                .and_then(|t| t.rsplit_once(" ... "))
                .filter(|(_, r)| !r.is_empty() && !r.starts_with("has been running"));
            if let Some((name, result)) = result {
                let at = started.elapsed().as_secs();
                if at >= 5 {
                    eprintln!(
                        "cargo xtask test: {at:>5} s (+{:>4} s) ended: {name} {result}",
                        at - before
                    );
                    before = at;
                }
            }
        }
    }
    child.wait().map_err(|e| Error::at("running cargo test", e))
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let missing = missing_packages();
    if !missing.is_empty() {
        let can_install = !args.no_install && present("apt-get") && (is_root() || present("sudo"));
        if !can_install {
            return Err(Error::msg(format!(
                "the tests need host tools that are missing: install them with `apt-get install {}`",
                missing.join(" ")
            )));
        }
        install(&missing)?;
        let still = missing_packages();
        if !still.is_empty() {
            return Err(Error::msg(format!(
                "still missing after apt-get install: {}",
                still.join(" ")
            )));
        }
    }
    // The image and lock tests fetch from a real Debian mirror.
    cairn_inputs::mirror::resolve(None).map_err(|e| {
        Error::msg(format!("{e}\n(the tests lock against a real Debian mirror: on Ubuntu or other hosts set CAIRN_DEBIAN_MIRROR to a Debian mirror URL)"))
    })?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if !args.update_digests {
        let can_install = !args.no_install && present("apt-get") && (is_root() || present("sudo"));
        let bin = spdx_tools(&env.ctx.root, can_install)?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin, oras_tool(env)?];
        paths.extend(std::env::split_paths(&path));
        cargo.env(
            "PATH",
            std::env::join_paths(paths).map_err(|e| Error::at("PATH", e))?,
        );
    }
    if args.update_digests {
        // Only the two tests that build the examples and compare with the file.
        cargo
            .args(["test", "--package", "xtask", "--locked"])
            .args(["--test", "it"])
            .args(&args.cargo_args)
            .args(["--", "match_the_committed_digests", "--include-ignored"])
            .env("CAIRN_UPDATE_DIGESTS", "1");
    } else {
        // The build first, timed on its own: where CI's time goes is printed per phase.
        let started = std::time::Instant::now();
        let before_filters = args.cargo_args.split(|a| a == "--").next().unwrap_or(&[]);
        let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["test", "--workspace", "--locked", "--no-run"])
            .args(before_filters)
            .current_dir(&env.ctx.root)
            .status()
            .map_err(|e| Error::at("running cargo test --no-run", e))?;
        if !built.success() {
            return Ok(ExitCode::FAILURE);
        }
        eprintln!(
            "cargo xtask test: build {:.0} s",
            started.elapsed().as_secs_f64()
        );
        cargo
            .args(["test", "--workspace", "--locked"])
            .args(with_slow_tier(&args.cargo_args));
    }
    let started = std::time::Instant::now();
    let status = run_timed(cargo.current_dir(&env.ctx.root), started)?;
    eprintln!(
        "cargo xtask test: tests {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        return Ok(ExitCode::FAILURE);
    }
    if args.update_digests || !args.cargo_args.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "fuzzing: {} targets, {} s each, one per core (`cargo xtask fuzz`)",
        crate::fuzz::TARGETS.len(),
        args.fuzz_seconds
    );
    let started = std::time::Instant::now();
    let fuzzed = crate::fuzz::run_targets(env, crate::fuzz::TARGETS, args.fuzz_seconds);
    eprintln!(
        "cargo xtask test: fuzzing {:.0} s (build included)",
        started.elapsed().as_secs_f64()
    );
    fuzzed
}
