//! The committed expected digests (`tests/expected-digests.toml`): what the example images
//! and nodes must hash to when built from the committed lock with the tests' stand-in
//! Kubernetes binaries. CI builds on a different machine every run, so the comparison is a
//! cross-machine reproducibility check. `cargo xtask test --update-digests` rewrites the
//! file (a deliberate step, e.g. after bumping BUILDER_VERSION or changing the lock).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Set (by `cargo xtask test --update-digests`) to rewrite the file instead of comparing.
pub const UPDATE_ENV: &str = "CAIRN_UPDATE_DIGESTS";

/// artifact name → (what → digest).
pub type Digests = BTreeMap<String, BTreeMap<String, String>>;

const HEADER: &str = "\
# Expected digests of the example images and nodes, built from the committed inputs.lock with
# the tests' stand-in Kubernetes binaries (tests/it/support/mod.rs, `pin_stand_ins`).
# Checked by the tests `example_images_match_the_committed_digests` (tests/it/images.rs) and
# `example_nodes_match_the_committed_digests` (tests/it/nodes.rs) on every CI run.
# Rewrite it deliberately with `cargo xtask test --update-digests`; a new BUILDER_VERSION
# requires that.
";

pub fn path() -> PathBuf {
    super::repo_root().join("tests/expected-digests.toml")
}

fn read() -> toml::Table {
    match std::fs::read_to_string(path()) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path().display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => panic!("{}: {e}", path().display()),
    }
}

/// Compares `actual` with the file's `[section.*]` tables (or rewrites them under
/// `CAIRN_UPDATE_DIGESTS=1`), panicking with every artifact and file that differs.
pub fn check(section: &str, builder_version: &str, actual: &Digests) {
    let mut table = read();
    if std::env::var_os(UPDATE_ENV).is_some_and(|v| v == "1") {
        table.insert("builder_version".into(), builder_version.into());
        let mut part = toml::Table::new();
        for (artifact, what) in actual {
            let entries: toml::Table = what
                .iter()
                .map(|(k, v)| (k.clone(), toml::Value::from(v.as_str())))
                .collect();
            part.insert(artifact.clone(), entries.into());
        }
        table.insert(section.into(), part.into());
        let text = format!("{HEADER}\n{}", toml::to_string(&table).unwrap());
        std::fs::write(path(), text).unwrap();
        eprintln!("wrote [{section}] of {}", path().display());
        return;
    }
    let recorded = table
        .get("builder_version")
        .and_then(|v| v.as_str())
        .unwrap_or("none");
    assert_eq!(
        recorded,
        builder_version,
        "{} was made with BUILDER_VERSION {recorded}, the code is at {builder_version}: \
         every digest changed on purpose, so run `cargo xtask test --update-digests` and commit the file",
        path().display()
    );
    let expected: Digests = match table.get(section) {
        Some(toml::Value::Table(t)) => t
            .iter()
            .map(|(artifact, what)| {
                let what = what
                    .as_table()
                    .unwrap_or_else(|| panic!("[{section}.{artifact}] is not a table"))
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                (artifact.clone(), what)
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    let mut problems = Vec::new();
    let artifacts: std::collections::BTreeSet<&String> =
        expected.keys().chain(actual.keys()).collect();
    for artifact in artifacts {
        let empty = BTreeMap::new();
        let want = expected.get(artifact).unwrap_or(&empty);
        let got = actual.get(artifact).unwrap_or(&empty);
        let keys: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        for key in keys {
            match (want.get(key), got.get(key)) {
                (Some(w), Some(g)) if w == g => {}
                (Some(w), Some(g)) => problems.push(format!(
                    "{section} {artifact}: {key}\n  expected {w}\n  built    {g}"
                )),
                (Some(w), None) => problems.push(format!(
                    "{section} {artifact}: {key} is expected ({w}) but was not built"
                )),
                (None, Some(g)) => problems.push(format!(
                    "{section} {artifact}: {key} was built ({g}) but the file has no entry"
                )),
                (None, None) => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the build differs from {}:\n{}\n(if the change is deliberate, run `cargo xtask test --update-digests` and commit the file)",
        path().display(),
        problems.join("\n")
    );
}
