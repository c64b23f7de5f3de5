//! Push a tree from the store (an image index, its manifests, configs and layers, or an
//! artifact manifest and its files) to a repository: blobs first, in parallel, each checked
//! with HEAD and skipped when present, mounted from another repository when possible;
//! then manifests, children before their index, as the exact bytes that were hashed.

use crate::client::{Body, Client, MANIFEST_ACCEPT, header, read_small};
use crate::error::RegistryError;
use cairn_formats::Digest;
use cairn_store::Store;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Manifests above this are refused (Harbor's limit).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// A content descriptor.
pub use cairn_oci::Descriptor;

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blob uploads at once.
    pub parallel: usize,
    /// Blobs above this go up as PATCH chunks of this size, then a closing PUT.
    pub upload_chunk: u64,
    /// Repositories of the same registry to mount blobs from (`mount=&from=`).
    pub mount_from: Vec<String>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            parallel: 4,
            upload_chunk: 64 << 20,
            mount_from: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub blobs: usize,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
    /// Blob bytes sent (a repeated push sends none).
    pub bytes_uploaded: u64,
    pub manifests: usize,
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type.contains("manifest") || media_type.ends_with("image.index.v1+json")
}

pub(crate) fn scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Reads a manifest or index from the store, refusing one above 4 MiB.
pub fn read_manifest(store: &Store, d: &Descriptor) -> Result<Vec<u8>, RegistryError> {
    if d.size > MAX_MANIFEST {
        return Err(RegistryError::other(format!(
            "manifest {} is {} bytes; registries refuse manifests above 4 MiB",
            d.digest, d.size
        )));
    }
    Ok(store.read_blob(&d.digest)?)
}

/// Children of a manifest or index: (manifests, blobs). A `subject` is a reference back,
/// not a part: it is not pushed with its referrer.
pub fn children(bytes: &[u8]) -> Result<(Vec<Descriptor>, Vec<Descriptor>), RegistryError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::other(format!("a manifest is not JSON: {e}")))?;
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    for (role, d) in cairn_oci::children(&v) {
        let d = || Descriptor::from_json(d).map_err(RegistryError::other);
        match role {
            cairn_oci::Role::Manifest => manifests.push(d()?),
            cairn_oci::Role::Config | cairn_oci::Role::Layer(_) => blobs.push(d()?),
            cairn_oci::Role::Subject => {}
        }
    }
    Ok((manifests, blobs))
}

/// Pushes `root` (from the store) to `repo` under `tag`.
pub fn push(
    client: &Client,
    store: &Store,
    repo: &str,
    root: &Descriptor,
    tag: &str,
    options: &PushOptions,
    progress: &dyn crate::BlobProgress,
) -> Result<PushReport, RegistryError> {
    // The tree, children first.
    let mut order: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    collect(store, root, &mut order, &mut blobs)?;
    let report = Mutex::new(PushReport {
        blobs: blobs.len(),
        ..Default::default()
    });
    let queue = Mutex::new(blobs.into_iter().collect::<Vec<_>>());
    let failed: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..options.parallel.max(1) {
            s.spawn(|| {
                loop {
                    if failed.lock().expect("lock").is_some() {
                        return;
                    }
                    let Some((digest, size)) = queue.lock().expect("lock").pop() else {
                        return;
                    };
                    let on_read = |n: u64| progress.bytes(&digest, n);
                    let result = push_blob(
                        client, store, repo, &digest, size, options, progress, &on_read,
                    );
                    progress.done(&digest);
                    match result {
                        Ok(outcome) => {
                            let mut r = report.lock().expect("lock");
                            match outcome {
                                BlobOutcome::Present => r.blobs_present += 1,
                                BlobOutcome::Mounted => r.blobs_mounted += 1,
                                BlobOutcome::Uploaded => {
                                    r.blobs_uploaded += 1;
                                    r.bytes_uploaded += size;
                                }
                            }
                        }
                        Err(e) => {
                            failed.lock().expect("lock").get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(e);
    }
    let mut report = report.into_inner().expect("lock");
    let n = order.len();
    for (i, (d, bytes)) in order.iter().enumerate() {
        let reference = if i + 1 == n {
            tag.to_string()
        } else {
            d.digest.to_string()
        };
        put_manifest(client, repo, &reference, &d.media_type, bytes)?;
        report.manifests += 1;
    }
    Ok(report)
}

fn collect(
    store: &Store,
    d: &Descriptor,
    order: &mut Vec<(Descriptor, Vec<u8>)>,
    blobs: &mut BTreeMap<Digest, u64>,
) -> Result<(), RegistryError> {
    let bytes = read_manifest(store, d)?;
    let (manifests, layer_blobs) = children(&bytes)?;
    for m in &manifests {
        collect(store, m, order, blobs)?;
    }
    for b in layer_blobs {
        if !store.has_blob(&b.digest) {
            return Err(RegistryError::other(format!(
                "blob {} is missing from the store: build again (or `cargo xtask store verify`)",
                b.digest
            )));
        }
        blobs.insert(b.digest, b.size);
    }
    if !order.iter().any(|(o, _)| o.digest == d.digest) {
        order.push((d.clone(), bytes));
    }
    Ok(())
}

enum BlobOutcome {
    Present,
    Mounted,
    Uploaded,
}

pub(crate) fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// Uploads one blob unless the repository has it. An upload that fails part way starts
/// again from the HEAD (the registry may have completed it).
#[allow(clippy::too_many_arguments)]
fn push_blob(
    client: &Client,
    store: &Store,
    repo: &str,
    digest: &Digest,
    size: u64,
    options: &PushOptions,
    progress: &dyn crate::BlobProgress,
    on_read: &(dyn Fn(u64) + Sync),
) -> Result<BlobOutcome, RegistryError> {
    let scope = scope(repo);
    let mut attempt = 0;
    loop {
        attempt += 1;
        progress.start(digest, size);
        match try_push_blob(client, store, repo, &scope, digest, size, options, on_read) {
            Ok(o) => return Ok(o),
            Err(e @ (RegistryError::Auth { .. } | RegistryError::Digest { .. })) => return Err(e),
            Err(e @ RegistryError::Http { status, .. })
                if status < 500 && status != 404 && status != 408 && status != 429 =>
            {
                // A client error is not transient: report it at once.
                return Err(e);
            }
            Err(e) if attempt >= crate::client::ATTEMPTS => return Err(e),
            Err(_) => std::thread::sleep(client.config.backoff * 2u32.pow(attempt - 1)),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn try_push_blob(
    client: &Client,
    store: &Store,
    repo: &str,
    scope: &str,
    digest: &Digest,
    size: u64,
    options: &PushOptions,
    on_read: &(dyn Fn(u64) + Sync),
) -> Result<BlobOutcome, RegistryError> {
    let blob_url = client.url(&format!("{repo}/blobs/{digest}"));
    let head = client.request("HEAD", &blob_url, scope, &[], Body::Empty, true)?;
    if head.status() == 200 {
        return Ok(BlobOutcome::Present);
    }
    drop(head);
    let uploads = client.url(&format!("{repo}/blobs/uploads/"));
    let mut location = None;
    for from in &options.mount_from {
        let url = format!(
            "{uploads}?mount={digest}&from={}",
            crate::client::encode(from)
        );
        // No right to read the other repository: upload as usual.
        let resp = match client.request("POST", &url, scope, &[], Body::Empty, false) {
            Ok(r) => r,
            Err(RegistryError::Auth { .. }) => continue,
            Err(e) => return Err(e),
        };
        match resp.status().as_u16() {
            201 => return Ok(BlobOutcome::Mounted),
            202 => {
                location = header(&resp, "location").map(|l| client.resolve(l));
                break;
            }
            _ => {}
        }
    }
    let mut location = match location {
        Some(l) => l,
        None => {
            let resp = client.request("POST", &uploads, scope, &[], Body::Empty, false)?;
            let status = resp.status().as_u16();
            if status != 202 {
                let body = read_small(resp);
                return Err(RegistryError::from_body("POST", &uploads, status, &body));
            }
            let l = header(&resp, "location").ok_or_else(|| {
                RegistryError::other(format!("POST {uploads}: 202 without a Location"))
            })?;
            client.resolve(l)
        }
    };
    let path = store.blob_path(digest);
    let final_body = if size <= options.upload_chunk {
        Body::File {
            path: &path,
            offset: 0,
            len: size,
            on_read: Some(on_read),
        }
    } else {
        let mut offset = 0;
        while offset < size {
            let len = options.upload_chunk.min(size - offset);
            let range = format!("{offset}-{}", offset + len - 1);
            let resp = client.request(
                "PATCH",
                &location,
                scope,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                Body::File {
                    path: &path,
                    offset,
                    len,
                    on_read: Some(on_read),
                },
                false,
            )?;
            let status = resp.status().as_u16();
            if status != 202 {
                let body = read_small(resp);
                return Err(RegistryError::from_body("PATCH", &location, status, &body));
            }
            if let Some(l) = header(&resp, "location") {
                location = client.resolve(l);
            }
            offset += len;
        }
        Body::Empty
    };
    let put_url = with_query(&location, &format!("digest={digest}"));
    let resp = client.request(
        "PUT",
        &put_url,
        scope,
        &[("Content-Type", "application/octet-stream")],
        final_body,
        false,
    )?;
    let status = resp.status().as_u16();
    if status != 201 {
        let body = read_small(resp);
        return Err(RegistryError::from_body("PUT", &put_url, status, &body));
    }
    if let Some(reported) = header(&resp, "docker-content-digest") {
        if reported != digest.to_string() {
            return Err(RegistryError::Digest {
                what: format!("blob upload to {repo}"),
                expected: digest.to_string(),
                found: reported.to_string(),
            });
        }
    }
    Ok(BlobOutcome::Uploaded)
}

/// PUTs a manifest's exact bytes under `reference` (a tag or its digest).
pub fn put_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<(), RegistryError> {
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(RegistryError::other(format!(
            "manifest for {repo}:{reference} is {} bytes; registries refuse manifests above 4 MiB",
            bytes.len()
        )));
    }
    let url = client.url(&format!("{repo}/manifests/{reference}"));
    let resp = client.request(
        "PUT",
        &url,
        &scope(repo),
        &[("Content-Type", media_type), ("Accept", MANIFEST_ACCEPT)],
        Body::Bytes(bytes),
        true,
    )?;
    let status = resp.status().as_u16();
    if status != 201 && status != 200 {
        let body = read_small(resp);
        return Err(RegistryError::from_body("PUT", &url, status, &body));
    }
    let digest = Digest::of(bytes);
    if let Some(reported) = header(&resp, "docker-content-digest") {
        if reported != digest.to_string() {
            return Err(RegistryError::Digest {
                what: format!("manifest {repo}:{reference}"),
                expected: digest.to_string(),
                found: reported.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, RegistryConfig};

    #[test]
    fn locations_resolve_and_keep_their_query() {
        let c = Client::new(RegistryConfig {
            host: "harbor.lan".into(),
            insecure: false,
            credentials: None,
            backoff: std::time::Duration::from_millis(1),
            ca_pem: None,
        })
        .unwrap();
        assert_eq!(
            c.resolve("/v2/a/blobs/uploads/u1?_state=xyz"),
            "https://harbor.lan/v2/a/blobs/uploads/u1?_state=xyz"
        );
        assert_eq!(
            c.resolve("http://other:5000/up/u2"),
            "http://other:5000/up/u2"
        );
        assert_eq!(
            with_query(
                "https://h/v2/a/blobs/uploads/u?_state=s",
                "digest=sha256:00"
            ),
            "https://h/v2/a/blobs/uploads/u?_state=s&digest=sha256:00"
        );
        assert_eq!(
            with_query("https://h/u", "digest=d"),
            "https://h/u?digest=d"
        );
    }

    #[test]
    fn error_envelopes_and_harbor_statuses_are_explained() {
        let e = RegistryError::from_body(
            "PUT",
            "https://h/v2/a/manifests/latest",
            412,
            br#"{"errors":[{"code":"DENIED","message":"tag latest is immutable"}]}"#,
        );
        let text = e.to_string();
        assert!(
            text.starts_with(
                "PUT https://h/v2/a/manifests/latest: HTTP 412: DENIED: tag latest is immutable"
            ),
            "{text}"
        );
        assert!(text.contains("the tag is immutable"), "{text}");
        let e = RegistryError::from_body("PATCH", "u", 413, b"<html>too large</html>");
        assert!(e.to_string().contains("lower --chunk-size"));
    }
}
