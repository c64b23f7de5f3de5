use cairn_formats::Digest;
use cairn_store::{ActionRecord, Store, StoreError, Tag};
use std::collections::BTreeSet;
use std::io::Write;

fn manifest_pointing_at(layer: &Digest) -> Vec<u8> {
    format!(r#"{{"schemaVersion":2,"config":{{"digest":"{layer}","size":1}},"layers":[{{"digest":"{layer}","size":1}}]}}"#).into_bytes()
}

#[test]
fn layout_blobs_tags_and_actions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), || panic!("nobody else holds the lock")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let d = store.write_blob(b"hello").unwrap();
    assert_eq!(d, Digest::of(b"hello"));
    assert_eq!(
        std::fs::read(dir.path().join("blobs/sha256").join(d.hex())).unwrap(),
        b"hello"
    );
    let m = store.write_blob(&manifest_pointing_at(&d)).unwrap();
    store
        .set_tag(Tag {
            name: "b".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: m,
            size: 5,
        })
        .unwrap();
    store
        .set_tag(Tag {
            name: "a".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: m,
            size: 5,
        })
        .unwrap();
    let index = std::fs::read_to_string(dir.path().join("index.json")).unwrap();
    assert!(
        index.find(r#""a""#).unwrap() < index.find(r#""b""#).unwrap(),
        "{index}"
    );
    assert_eq!(store.tags().unwrap().len(), 2);

    let key = Digest::of(b"step key");
    assert!(store.action_get(&key).is_none());
    let record = ActionRecord {
        step: "test".into(),
        blobs: vec![d],
        output: serde_json::json!({"n": 1}),
    };
    store.action_put(&key, &record).unwrap();
    assert_eq!(store.action_get(&key), Some(record));
    // A record whose blob is gone does not count.
    let key2 = Digest::of(b"other");
    store
        .action_put(
            &key2,
            &ActionRecord {
                step: "t".into(),
                blobs: vec![Digest::of(b"absent")],
                output: serde_json::Value::Null,
            },
        )
        .unwrap();
    assert!(store.action_get(&key2).is_none());
}

#[test]
fn mismatching_blob_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), || {}).unwrap();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"actual").unwrap();
    let err = w.finish(Some(Digest::of(b"expected"))).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }));
    assert!(
        err.to_string()
            .contains(&Digest::of(b"expected").to_string())
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    // Dropped unfinished: nothing either.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"half").unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn verify_finds_corruption_and_gc_keeps_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), || {}).unwrap();
    let layer = store.write_blob(b"layer").unwrap();
    let orphan = store.write_blob(b"orphan").unwrap();
    let m = store.write_blob(&manifest_pointing_at(&layer)).unwrap();
    let mt = "application/vnd.oci.image.manifest.v1+json".to_string();
    store
        .set_tag(Tag {
            name: "keep".into(),
            media_type: mt.clone(),
            digest: m,
            size: 1,
        })
        .unwrap();
    let m2 = store.write_blob(b"{\"layers\":[]}").unwrap();
    store
        .set_tag(Tag {
            name: "old".into(),
            media_type: mt,
            digest: m2,
            size: 1,
        })
        .unwrap();
    store
        .action_put(
            &Digest::of(b"k"),
            &ActionRecord {
                step: "s".into(),
                blobs: vec![orphan],
                output: serde_json::Value::Null,
            },
        )
        .unwrap();

    let report = store.verify(|_| {}).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.n_blobs, 4);
    std::fs::write(store.blob_path(&layer), b"tampered").unwrap();
    let report = store.verify(|_| {}).unwrap();
    assert_eq!(
        report.corrupt,
        vec![(layer.hex(), Some(Digest::of(b"tampered")))]
    );
    std::fs::write(store.blob_path(&layer), b"layer").unwrap();

    let report = store.gc(&BTreeSet::from(["keep".to_string()])).unwrap();
    assert_eq!(report.removed_tags, ["old"]);
    assert_eq!(report.removed_blobs, 2, "{report:?}");
    assert_eq!(report.removed_actions, 1);
    assert!(
        store.has_blob(&layer)
            && store.has_blob(&m)
            && !store.has_blob(&orphan)
            && !store.has_blob(&m2)
    );
    std::fs::remove_file(store.blob_path(&layer)).unwrap();
    let report = store.verify(|_| {}).unwrap();
    assert_eq!(report.missing, vec![("keep".to_string(), layer)]);
}

#[test]
fn second_open_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), || {}).unwrap();
    let path = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let tx2 = tx.clone();
        let _second = Store::open(&path, move || tx2.send("waiting").unwrap()).unwrap();
        tx.send("opened").unwrap();
    });
    assert_eq!(rx.recv().unwrap(), "waiting");
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(200))
            .is_err(),
        "opened while the lock was held"
    );
    drop(first);
    assert_eq!(rx.recv().unwrap(), "opened");
    t.join().unwrap();
}

#[test]
fn gc_keeps_a_base_os_whole_while_a_kept_node_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), || {}).unwrap();
    let squashfs = store.write_blob(b"the shared root").unwrap();
    let firmware = store.write_blob(b"start4.elf").unwrap();
    let old_squashfs = store.write_blob(b"last month's root").unwrap();
    let old_firmware = store.write_blob(b"last month's start4.elf").unwrap();
    let node =
        format!("{{\"layers\":[{{\"mediaType\":\"m\",\"digest\":\"{squashfs}\",\"size\":15}}]}}");
    let m = store.write_blob(node.as_bytes()).unwrap();
    store
        .set_tag(Tag {
            name: "pi-worker".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: m,
            size: node.len() as u64,
        })
        .unwrap();
    let base = |key: &[u8], blobs: Vec<Digest>| {
        store
            .action_put(
                &Digest::of(key),
                &ActionRecord {
                    step: "os-base node-os aarch64".into(),
                    blobs,
                    output: serde_json::Value::Null,
                },
            )
            .unwrap()
    };
    base(b"now", vec![squashfs, firmware]);
    base(b"then", vec![old_squashfs, old_firmware]);
    let report = store
        .gc(&BTreeSet::from(["pi-worker".to_string()]))
        .unwrap();
    assert!(
        store.has_blob(&firmware) && store.action_get(&Digest::of(b"now")).is_some(),
        "the running base stays whole: {report:?}"
    );
    assert!(
        !store.has_blob(&old_firmware)
            && !store.has_blob(&old_squashfs)
            && store.action_get(&Digest::of(b"then")).is_none(),
        "a base no kept node runs goes: {report:?}"
    );
    assert_eq!((report.removed_blobs, report.removed_actions), (2, 1));
}
