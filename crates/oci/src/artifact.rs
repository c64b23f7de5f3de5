//! The manifests Cairn writes beside images (nodes, build-cache entries, signatures, SBOMs,
//! signature records, bundles' inputs) and the indexes over them: typed on oci-spec's
//! manifest, index and descriptor, any media type by its string, serialised canonically
//! through [`JsonBlob`] like every other OCI document.

use crate::{JsonBlob, media};
use cairn_formats::Digest;
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType,
};
use std::collections::{BTreeMap, HashMap};

/// The empty config (`{}`) of an artifact manifest.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// A descriptor of `media_type` (the OCI media types map to oci-spec's variants and
/// serialise back as the same string).
pub fn blob(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(crate::oci_digest(digest))
        .size(size)
        .build()
        .expect("required fields are set")
}

/// `d` with `annotations` (none when empty).
pub fn annotated<K: Into<String>, V: Into<String>>(
    mut d: Descriptor,
    annotations: impl IntoIterator<Item = (K, V)>,
) -> Descriptor {
    let map: HashMap<String, String> = annotations
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    d.set_annotations((!map.is_empty()).then_some(map));
    d
}

/// `d` naming the artifact type of the manifest it points at (an index entry, a referrer).
pub fn of_artifact_type(mut d: Descriptor, artifact_type: &str) -> Descriptor {
    d.set_artifact_type(Some(MediaType::from(artifact_type)));
    d
}

/// The descriptor of [`EMPTY_CONFIG`]; `inline` carries its bytes as `data` (`e30=`), as
/// node and inputs manifests do.
pub fn empty_config(inline: bool) -> Descriptor {
    let mut d = blob(
        media::EMPTY,
        Digest::of(EMPTY_CONFIG),
        EMPTY_CONFIG.len() as u64,
    );
    if inline {
        d.set_data(Some("e30=".into()));
    }
    d
}

/// An image manifest as an artifact: its type, config, layers, the manifest it is about
/// (`subject`) and annotations; the optional parts are left out when absent or empty.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A manifest of `artifact_type` over `layers`, with the empty config.
    pub fn artifact(artifact_type: &str, config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            artifact_type: Some(artifact_type.into()),
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Its canonical bytes and digest.
    pub fn to_blob(&self) -> JsonBlob {
        let mut b = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(self.config.clone())
            .layers(self.layers.clone());
        if let Some(t) = &self.artifact_type {
            b = b.artifact_type(MediaType::from(t.as_str()));
        }
        if let Some(s) = &self.subject {
            b = b.subject(s.clone());
        }
        if !self.annotations.is_empty() {
            b = b.annotations(
                self.annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            );
        }
        let manifest: ImageManifest = b.build().expect("required fields are set");
        JsonBlob::of(&manifest)
    }
}

/// An index over `manifests` (in the order given), with no annotations.
pub fn index(manifests: Vec<Descriptor>) -> JsonBlob {
    let index: ImageIndex = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("required fields are set");
    JsonBlob::of(&index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes as the JSON Cairn wrote by hand before there was one model.
    #[test]
    fn an_artifact_manifest_is_the_canonical_json_of_its_parts() {
        let layer = annotated(
            blob(media::DISK, Digest::of(b"disk"), 4),
            [("org.opencontainers.image.title", "pi.img")],
        );
        let mut m = Manifest::artifact(media::NODE_ARTIFACT, empty_config(true), vec![layer]);
        m.subject = Some(blob(media::MANIFEST, Digest::of(b"m"), 1));
        m.annotations.insert("dev.cairn.node".into(), "pi".into());
        let by_hand = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::MANIFEST,
            "artifactType": media::NODE_ARTIFACT,
            "config": {"mediaType": media::EMPTY, "digest": Digest::of(b"{}").to_string(), "size": 2, "data": "e30="},
            "layers": [{"mediaType": media::DISK, "digest": Digest::of(b"disk").to_string(), "size": 4,
                        "annotations": {"org.opencontainers.image.title": "pi.img"}}],
            "subject": {"mediaType": media::MANIFEST, "digest": Digest::of(b"m").to_string(), "size": 1},
            "annotations": {"dev.cairn.node": "pi"},
        });
        let expected = cairn_formats::json::to_canonical_vec(&by_hand).unwrap();
        assert_eq!(
            String::from_utf8(m.to_blob().bytes).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        // Without the optional parts, none of their keys.
        let plain = Manifest {
            artifact_type: None,
            config: empty_config(false),
            layers: vec![],
            subject: None,
            annotations: BTreeMap::new(),
        };
        let text = String::from_utf8(plain.to_blob().bytes).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"config":{{"digest":"{}","mediaType":"application/vnd.oci.empty.v1+json","size":2}},"layers":[],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}}"#,
                Digest::of(b"{}")
            )
        );
    }

    #[test]
    fn an_index_names_each_entrys_artifact_type_and_annotations() {
        let entry = annotated(
            of_artifact_type(blob(media::MANIFEST, Digest::of(b"a"), 3), media::SPDX),
            [(crate::REF_NAME, "pi.sbom")],
        );
        let by_hand = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::INDEX,
            "manifests": [{"mediaType": media::MANIFEST, "digest": Digest::of(b"a").to_string(), "size": 3,
                           "artifactType": media::SPDX, "annotations": {crate::REF_NAME: "pi.sbom"}}],
        });
        assert_eq!(
            index(vec![entry]).bytes,
            cairn_formats::json::to_canonical_vec(&by_hand).unwrap()
        );
        assert_eq!(
            index(vec![]).bytes,
            br#"{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#
        );
    }
}
