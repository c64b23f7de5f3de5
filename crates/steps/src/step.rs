//! The one way a step is cached: its key (a digest of the inputs it declares), then the
//! local action cache, then a substituter (the registry as a shared build cache, when
//! `--cache` names one), then the build, whose typed output is recorded.
//!
//! The record is the step's output as serde writes it: `--json` is a separate rendering
//! (with store paths, `cached` and whatever a command adds), never the cache format.

use crate::{Context, Error};
use cairn_formats::Digest;
use cairn_store::{ActionRecord, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where a step missing from the local action cache may be found, already built: the
/// command line plugs in the registry's build cache (`cairn_registry::cache`). An entry it
/// hands back has all its blobs in the store; one it cannot use is said on stderr and
/// skipped, and the step is built.
pub trait Substituter: Send + Sync + std::fmt::Debug {
    /// The record of `key`, with its blobs pulled into `store`, if there is a usable one.
    fn fetch(&self, store: &Store, key: &Digest) -> Option<ActionRecord>;
    /// Offers a step just built; a failure is said on stderr, never fails the build.
    fn offer(&self, store: &Store, key: &Digest, record: &ActionRecord);
}

/// A step's recorded output: serde both ways, and the blobs it refers to (the record
/// counts only while they all exist).
pub trait Output: Serialize + DeserializeOwned {
    fn blobs(&self) -> Vec<Digest>;
    /// The blobs whose sizes the output records: a recorded output is used only while the
    /// store's copies have those sizes (a truncated blob is found before it is trusted).
    fn sizes(&self) -> Vec<(Digest, u64)> {
        Vec::new()
    }
}

/// A step: what it is called in the cache, and its key.
#[derive(Debug, Clone)]
pub struct Step {
    /// The record's `step` (`os-base haproxy aarch64`), for people reading the cache.
    pub name: String,
    pub key: Digest,
}

impl Step {
    /// A step keyed by the canonical JSON of the inputs it declares. The document names
    /// the step kind and carries [`crate::BUILDER_VERSION`], so equal keys mean equal
    /// outputs.
    pub fn new(name: impl Into<String>, inputs: &impl Serialize) -> Step {
        Step {
            name: name.into(),
            key: key(inputs),
        }
    }
}

/// The digest of `inputs`' canonical JSON.
pub fn key(inputs: &impl Serialize) -> Digest {
    Digest::of(&cairn_formats::json::to_canonical_vec(inputs).expect("step keys serialise"))
}

/// Runs `step`: its recorded output when the local cache or the substituter has one (and
/// `true`), else `build`'s, recorded and offered (and `false`). A record that no longer
/// reads as `O` is built again; a failed build records nothing.
pub fn run<O: Output>(
    ctx: &Context,
    store: &Store,
    step: &Step,
    build: impl FnOnce() -> Result<O, Error>,
) -> Result<(O, bool), Error> {
    run_with(ctx.substituter.as_deref(), store, step, build)
}

/// [`run`] for a step that is neither substituted nor offered: one whose output only this
/// store needs (a node's registry form, which a pull rebuilds from what it brings).
pub fn run_local<O: Output>(
    store: &Store,
    step: &Step,
    build: impl FnOnce() -> Result<O, Error>,
) -> Result<(O, bool), Error> {
    run_with(None, store, step, build)
}

fn run_with<O: Output>(
    substituter: Option<&dyn Substituter>,
    store: &Store,
    step: &Step,
    build: impl FnOnce() -> Result<O, Error>,
) -> Result<(O, bool), Error> {
    if let Some(output) = lookup_with(substituter, store, step) {
        return Ok((output, true));
    }
    let output = build()?;
    record_with(substituter, store, step, &output)?;
    Ok((output, false))
}

/// The first half of [`run`], for a caller that builds several steps together (a
/// container image's layers, one per arch, in parallel): the recorded output, from the
/// local cache, else from the substituter (then kept locally).
pub fn lookup<O: Output>(ctx: &Context, store: &Store, step: &Step) -> Option<O> {
    lookup_with(ctx.substituter.as_deref(), store, step)
}

fn lookup_with<O: Output>(
    substituter: Option<&dyn Substituter>,
    store: &Store,
    step: &Step,
) -> Option<O> {
    let found = match store.action_get(&step.key) {
        Some(r) => r,
        None => {
            let r = substituter?.fetch(store, &step.key)?;
            store.action_put(&step.key, &r).ok()?;
            r
        }
    };
    let output: O = serde_json::from_value(found.output).ok()?;
    for (digest, size) in output.sizes() {
        let found = std::fs::metadata(store.blob_path(&digest)).map_or(0, |m| m.len());
        if found != size {
            eprintln!(
                "warning: the store's copy of {digest} is {found} bytes, step {} recorded {size}: building it again (`cargo xtask store verify --repair` finds other damage)",
                step.name
            );
            return None;
        }
    }
    Some(output)
}

/// The second half of [`run`]: records what was built, and offers it to the substituter.
pub fn record<O: Output>(
    ctx: &Context,
    store: &Store,
    step: &Step,
    output: &O,
) -> Result<(), Error> {
    record_with(ctx.substituter.as_deref(), store, step, output)
}

fn record_with<O: Output>(
    substituter: Option<&dyn Substituter>,
    store: &Store,
    step: &Step,
    output: &O,
) -> Result<(), Error> {
    let record = ActionRecord {
        step: step.name.clone(),
        blobs: output.blobs(),
        output: serde_json::to_value(output).expect("step outputs serialise"),
    };
    store.action_put(&step.key, &record)?;
    if let Some(s) = substituter {
        s.offer(store, &step.key, &record);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::sync::Mutex;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Out {
        blob: Digest,
        n: u32,
    }
    impl Output for Out {
        fn blobs(&self) -> Vec<Digest> {
            vec![self.blob]
        }
    }

    #[derive(Debug, Default)]
    struct Remote {
        entries: Mutex<Vec<(Digest, ActionRecord)>>,
        offered: Mutex<Vec<Digest>>,
    }
    impl Substituter for Remote {
        fn fetch(&self, _store: &Store, key: &Digest) -> Option<ActionRecord> {
            let entries = self.entries.lock().unwrap();
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, r)| r.clone())
        }
        fn offer(&self, _store: &Store, key: &Digest, _record: &ActionRecord) {
            self.offered.lock().unwrap().push(*key);
        }
    }

    fn ctx(dir: &std::path::Path, remote: Option<std::sync::Arc<Remote>>) -> Context {
        Context {
            root: dir.into(),
            store: dir.join("store"),
            cache: dir.join("cache"),
            progress: false,
            substituter: remote.map(|r| r as std::sync::Arc<dyn Substituter>),
        }
    }

    #[test]
    fn a_step_is_built_once_then_read_back_typed() {
        let dir = tempfile::tempdir().unwrap();
        let remote = std::sync::Arc::new(Remote::default());
        let ctx = ctx(dir.path(), Some(remote.clone()));
        let store = ctx.open_store().unwrap();
        let step = Step::new("test one", &serde_json::json!({"step": "test", "x": 1}));
        let blob = store.write_blob(b"output").unwrap();
        let mut builds = 0;
        let (out, cached) = run(&ctx, &store, &step, || {
            builds += 1;
            Ok(Out { blob, n: 7 })
        })
        .unwrap();
        assert_eq!((out, cached), (Out { blob, n: 7 }, false));
        assert_eq!(*remote.offered.lock().unwrap(), vec![step.key]);
        let record = store.action_get(&step.key).unwrap();
        assert_eq!(record.step, "test one");
        assert_eq!(record.blobs, vec![blob]);
        assert_eq!(record.output["n"], 7);
        let (out, cached) = run(&ctx, &store, &step, || -> Result<Out, Error> {
            panic!("a recorded step is not built again")
        })
        .unwrap();
        assert_eq!((out.n, cached), (7, true));
        // Another key is another step.
        let other = Step::new("test two", &serde_json::json!({"step": "test", "x": 2}));
        assert_ne!(other.key, step.key);
        let (_, cached) = run(&ctx, &store, &other, || {
            builds += 1;
            Ok(Out { blob, n: 8 })
        })
        .unwrap();
        assert!(!cached);
        assert_eq!(builds, 2);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sized {
        blob: Digest,
        size: u64,
    }
    impl Output for Sized {
        fn blobs(&self) -> Vec<Digest> {
            vec![self.blob]
        }
        fn sizes(&self) -> Vec<(Digest, u64)> {
            vec![(self.blob, self.size)]
        }
    }

    #[test]
    fn a_record_whose_blob_was_truncated_is_built_again() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path(), None);
        let store = ctx.open_store().unwrap();
        let step = Step::new("sized", &serde_json::json!({"step": "sized"}));
        let build = || {
            let blob = store.write_blob(b"the whole output")?;
            Ok(Sized { blob, size: 16 })
        };
        let (out, cached) = run(&ctx, &store, &step, build).unwrap();
        assert!(!cached);
        assert!(run(&ctx, &store, &step, build).unwrap().1, "intact: cached");
        // Cut short in place (as a full disk or a bad copy leaves it).
        let path = store.blob_path(&out.blob);
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).unwrap();
        std::fs::write(&path, b"the whole").unwrap();
        let mut rebuilt = false;
        let (_, cached) = run(&ctx, &store, &step, || {
            rebuilt = true;
            build()
        })
        .unwrap();
        assert!(!cached && rebuilt, "a truncated blob is not trusted");
        assert_eq!(std::fs::read(&path).unwrap(), b"the whole output");
    }

    #[test]
    fn a_substituted_record_is_kept_and_a_stale_or_failed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let remote = std::sync::Arc::new(Remote::default());
        let ctx = ctx(dir.path(), Some(remote.clone()));
        let store = ctx.open_store().unwrap();
        let blob = store.write_blob(b"pulled").unwrap();
        let step = Step::new("test", &serde_json::json!({"step": "test"}));
        remote.entries.lock().unwrap().push((
            step.key,
            ActionRecord {
                step: "test".into(),
                blobs: vec![blob],
                output: serde_json::json!({"blob": blob, "n": 3}),
            },
        ));
        let (out, cached) = run(&ctx, &store, &step, || -> Result<Out, Error> {
            panic!("a substituted step is not built")
        })
        .unwrap();
        assert_eq!((out.n, cached), (3, true));
        assert!(store.action_get(&step.key).is_some(), "kept locally");
        assert!(remote.offered.lock().unwrap().is_empty());
        // A record of another shape (an older builder's) is built again, and replaced.
        let stale = Step::new("stale", &serde_json::json!({"step": "stale"}));
        store
            .action_put(
                &stale.key,
                &ActionRecord {
                    step: "stale".into(),
                    blobs: vec![],
                    output: serde_json::json!({"digest": "x"}),
                },
            )
            .unwrap();
        let (out, cached) = run(&ctx, &store, &stale, || Ok(Out { blob, n: 4 })).unwrap();
        assert_eq!((out.n, cached), (4, false));
        assert_eq!(store.action_get(&stale.key).unwrap().output["n"], 4);
        // A failed build records nothing.
        let failing = Step::new("failing", &serde_json::json!({"step": "failing"}));
        let err = run(&ctx, &store, &failing, || -> Result<Out, Error> {
            Err(Error::msg("the build failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the build failed");
        assert!(store.action_get(&failing.key).is_none());
    }
}
