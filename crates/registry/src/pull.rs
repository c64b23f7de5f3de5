//! Pull a tree from a repository into the store: manifests and blobs verified by digest
//! before they land, redirects followed without credentials to other hosts, an interrupted
//! blob resumed with a ranged GET.

use crate::client::{Body, Client, MANIFEST_ACCEPT, header, read_small};
use crate::error::RegistryError;
use crate::push::{Descriptor, MAX_MANIFEST, children};
use cairn_formats::Digest;
use cairn_store::Store;
use std::io::{Read, Write};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    pub manifests: usize,
    pub blobs: usize,
    pub blobs_present: usize,
    pub bytes_downloaded: u64,
    pub resumed: usize,
}

fn scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// Fetches a manifest by tag or digest: its descriptor and exact bytes, verified.
pub fn get_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
) -> Result<(Descriptor, Vec<u8>), RegistryError> {
    let url = client.url(&format!("{repo}/manifests/{reference}"));
    let resp = client.request(
        "GET",
        &url,
        &scope(repo),
        &[("Accept", MANIFEST_ACCEPT)],
        Body::Empty,
        true,
    )?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(RegistryError::Http {
            method: "GET".into(),
            url,
            status,
            message: format!(
                "{repo}:{reference} does not exist in {}",
                client.config.host
            ),
        });
    }
    if status != 200 {
        let body = read_small(resp);
        return Err(RegistryError::from_body("GET", &url, status, &body));
    }
    let reported = header(&resp, "docker-content-digest").map(str::to_string);
    let content_type = header(&resp, "content-type").unwrap_or("").to_string();
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::Transport {
            method: "GET".into(),
            url: url.clone(),
            message: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(RegistryError::other(format!(
            "{url}: the manifest is larger than 4 MiB; refusing it"
        )));
    }
    let digest = Digest::of(&bytes);
    let expected = reference
        .parse::<Digest>()
        .ok()
        .or_else(|| reported.as_deref().and_then(|r| r.parse().ok()));
    if let Some(expected) = expected {
        if expected != digest {
            return Err(RegistryError::Digest {
                what: format!("manifest {repo}:{reference} from {url}"),
                expected: expected.to_string(),
                found: digest.to_string(),
            });
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::other(format!("{url}: the manifest is not JSON: {e}")))?;
    let media_type = v["mediaType"]
        .as_str()
        .map(str::to_string)
        .unwrap_or(content_type);
    Ok((
        Descriptor {
            media_type,
            digest,
            size: bytes.len() as u64,
        },
        bytes,
    ))
}

/// Pulls `repo:reference` and everything it refers to into the store; returns the root.
pub fn pull(
    client: &Client,
    store: &Store,
    repo: &str,
    reference: &str,
    progress: &dyn crate::BlobProgress,
) -> Result<(Descriptor, PullReport), RegistryError> {
    let mut report = PullReport::default();
    let (root, bytes) = get_manifest(client, repo, reference)?;
    pull_tree(client, store, repo, &bytes, &mut report, progress)?;
    store.write_blob(&bytes)?;
    report.manifests += 1;
    Ok((root, report))
}

fn pull_tree(
    client: &Client,
    store: &Store,
    repo: &str,
    bytes: &[u8],
    report: &mut PullReport,
    progress: &dyn crate::BlobProgress,
) -> Result<(), RegistryError> {
    let (manifests, blobs) = children(bytes)?;
    for b in blobs {
        report.blobs += 1;
        if store.has_blob(&b.digest) {
            report.blobs_present += 1;
            continue;
        }
        fetch_blob(client, store, repo, &b, report, progress)?;
    }
    for m in manifests {
        let (_, child) = get_manifest(client, repo, &m.digest.to_string())?;
        pull_tree(client, store, repo, &child, report, progress)?;
        store.write_blob(&child)?;
        report.manifests += 1;
    }
    Ok(())
}

/// Downloads a blob into the store, verifying size and digest; resumes a dropped
/// connection with a ranged GET.
pub fn fetch_blob(
    client: &Client,
    store: &Store,
    repo: &str,
    d: &Descriptor,
    report: &mut PullReport,
    progress: &dyn crate::BlobProgress,
) -> Result<(), RegistryError> {
    let scope = scope(repo);
    progress.start(&d.digest, d.size);
    let mut writer = store.blob_writer()?;
    let mut attempt = 0;
    let mut last_error = String::new();
    while attempt < crate::client::ATTEMPTS {
        attempt += 1;
        let have = writer.n_bytes();
        if have > d.size {
            break;
        }
        if have == d.size {
            break;
        }
        let range = format!("bytes={have}-");
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if have > 0 {
            headers.push(("Range", &range));
        }
        let mut url = client.url(&format!("{repo}/blobs/{}", d.digest));
        let mut redirects = 0;
        let resp = loop {
            let resp = client.request("GET", &url, &scope, &headers, Body::Empty, true)?;
            if resp.status().is_redirection() && redirects < 5 {
                let Some(l) = header(&resp, "location") else {
                    break resp;
                };
                url = client.resolve(l);
                redirects += 1;
                continue;
            }
            break resp;
        };
        let status = resp.status().as_u16();
        let range_start = header(&resp, "content-range")
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.trim().parse::<u64>().ok());
        match status {
            200 if have > 0 => {
                // The server ignored the range: start over.
                writer = store.blob_writer()?;
            }
            206 if range_start != Some(have) => {
                // Not the bytes asked for: start over without a range.
                drop(resp);
                writer = store.blob_writer()?;
                continue;
            }
            200 | 206 => {}
            _ => {
                let body = read_small(resp);
                return Err(RegistryError::from_body("GET", &url, status, &body));
            }
        }
        let mut reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 * 1024];
        let result: std::io::Result<()> = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if writer.n_bytes() + n as u64 > d.size {
                        return Err(RegistryError::Digest {
                            what: format!("blob {} from {url}", d.digest),
                            expected: format!("{} bytes", d.size),
                            found: "more bytes".into(),
                        });
                    }
                    if let Err(e) = writer.write_all(&buf[..n]) {
                        return Err(RegistryError::other(format!("writing the store: {e}")));
                    }
                    report.bytes_downloaded += n as u64;
                    progress.bytes(&d.digest, n as u64);
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) if writer.n_bytes() == d.size => break,
            Ok(()) => {
                last_error = format!(
                    "the connection ended at {} of {} bytes",
                    writer.n_bytes(),
                    d.size
                )
            }
            Err(e) => last_error = e.to_string(),
        }
        report.resumed += 1;
        std::thread::sleep(client.config.backoff * 2u32.pow(attempt - 1));
    }
    if writer.n_bytes() != d.size {
        return Err(RegistryError::Transport {
            method: "GET".into(),
            url: client.url(&format!("{repo}/blobs/{}", d.digest)),
            message: format!("gave up after {attempt} attempts: {last_error}"),
        });
    }
    progress.done(&d.digest);
    writer.finish(Some(d.digest)).map_err(|e| match e {
        cairn_store::StoreError::DigestMismatch { expected, found } => RegistryError::Digest {
            what: format!("blob from {repo}"),
            expected: expected.to_string(),
            found: found.to_string(),
        },
        other => RegistryError::from(other),
    })?;
    Ok(())
}
