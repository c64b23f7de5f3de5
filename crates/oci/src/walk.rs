//! The one walk over what an OCI manifest or index points at, and the plain descriptor
//! (media type, digest, size) that push, pull, verify, gc and export move blobs by.

use cairn_formats::Digest;

/// A blob as the registry and the store move it: what it is, its digest and its size.
///
/// Its serde form is the one Cairn's step records keep (`digest`, `size`, and `media_type`
/// where it is known); an OCI document's descriptors are read with [`Descriptor::from_json`]
/// and written through oci-spec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Descriptor {
    /// A blob whose media type its holder does not record (a step's output file).
    pub fn blob(digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest,
            size,
        }
    }

    /// Reads a descriptor's `mediaType`, `digest` and `size`; the error quotes it.
    pub fn from_json(d: &serde_json::Value) -> Result<Descriptor, String> {
        let bad = || format!("bad descriptor {d}");
        Ok(Descriptor {
            media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: d["digest"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?,
            size: d["size"].as_u64().ok_or_else(bad)?,
        })
    }
}

/// Where a child stands in its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An entry of an index's `manifests`.
    Manifest,
    Config,
    /// The layer at this position of `layers`.
    Layer(usize),
    /// The manifest a signature, attestation or SBOM is about (`subject`): a reference
    /// back, not a part; gc keeps it, a push does not send it as a child.
    Subject,
}

/// The descriptors `doc` (a manifest or an index) points at, in document order:
/// `manifests`, `config`, `layers`, then `subject`. Each is the raw JSON object, so a
/// caller reads what it needs (a strict push, a lenient gc, labels for verify).
pub fn children(doc: &serde_json::Value) -> Vec<(Role, &serde_json::Value)> {
    let mut out: Vec<(Role, &serde_json::Value)> = Vec::new();
    for m in doc["manifests"].as_array().into_iter().flatten() {
        out.push((Role::Manifest, m));
    }
    if doc["config"].is_object() {
        out.push((Role::Config, &doc["config"]));
    }
    for (i, l) in doc["layers"].as_array().into_iter().flatten().enumerate() {
        out.push((Role::Layer(i), l));
    }
    if doc["subject"].is_object() {
        out.push((Role::Subject, &doc["subject"]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_come_in_document_order_with_their_roles() {
        let d = |n: u8| serde_json::json!({"mediaType": "m", "digest": Digest::of(&[n]).to_string(), "size": n});
        let manifest = serde_json::json!({
            "schemaVersion": 2, "subject": d(9), "layers": [d(2), d(3)], "config": d(1)
        });
        let roles: Vec<(Role, u64)> = children(&manifest)
            .into_iter()
            .map(|(r, v)| (r, Descriptor::from_json(v).unwrap().size))
            .collect();
        assert_eq!(
            roles,
            [
                (Role::Config, 1),
                (Role::Layer(0), 2),
                (Role::Layer(1), 3),
                (Role::Subject, 9)
            ]
        );
        let index = serde_json::json!({"manifests": [d(4), d(5)]});
        assert_eq!(
            children(&index).iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [Role::Manifest, Role::Manifest]
        );
        assert!(children(&serde_json::json!("not a manifest")).is_empty());
    }

    #[test]
    fn a_descriptor_without_digest_or_size_is_refused_naming_it() {
        let e =
            Descriptor::from_json(&serde_json::json!({"mediaType": "m", "size": 1})).unwrap_err();
        assert!(
            e.contains("bad descriptor") && e.contains("\"size\":1"),
            "{e}"
        );
        let e = Descriptor::from_json(&serde_json::json!({"digest": Digest::of(b"x").to_string()}))
            .unwrap_err();
        assert!(e.contains("bad descriptor"), "{e}");
    }
}
