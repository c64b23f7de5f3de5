//! OCI manifests and indexes as a registry or an import bundle hands them over: the
//! children a pull follows, and the blobs the store's walk reaches.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((manifests, blobs)) = cairn_registry::push::children(data) {
        for d in manifests.iter().chain(&blobs) {
            assert!(d.digest.to_string().starts_with("sha256:"));
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = cairn_store::child_digests(&v);
    }
});
