//! The OCI model: every media type (`media`), the one walk over a manifest's or index's
//! children and the plain blob descriptor (`children`, `Descriptor`), and image JSON (config, manifest, index,
//! layout index) built on oci-spec's types and serialised canonically (see
//! [`cairn_formats::json`]).

pub mod artifact;
pub mod media;
mod walk;

pub use walk::{Descriptor, Role, children};

use cairn_formats::Digest;
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use std::collections::{BTreeMap, HashMap};

pub use oci_spec::image::{Descriptor as OciDescriptor, MediaType as OciMediaType};

/// The annotation that names a tag in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI platform: `linux/amd64`, `linux/arm/v7`, `linux/arm64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
}

impl Platform {
    fn to_oci(self) -> oci_spec::image::Platform {
        let mut b = PlatformBuilder::default()
            .architecture(Arch::from(self.architecture))
            .os(Os::Linux);
        if let Some(v) = self.variant {
            b = b.variant(v);
        }
        b.build().expect("architecture and os are set")
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.variant {
            Some(v) => write!(f, "linux/{}/{v}", self.architecture),
            None => write!(f, "linux/{}", self.architecture),
        }
    }
}

/// The runtime configuration of a container image, all in canonical order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value`, in the order given (order is meaningful to a reader of the config).
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// A serialised JSON blob and its descriptor fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonBlob {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl JsonBlob {
    pub(crate) fn of<T: serde::Serialize>(value: &T) -> JsonBlob {
        let bytes =
            cairn_formats::json::to_canonical_vec(value).expect("oci-spec types always serialise");
        let digest = Digest::of(&bytes);
        JsonBlob { bytes, digest }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

pub fn descriptor(media_type: MediaType, digest: Digest, size: u64) -> OciDescriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(oci_digest(digest))
        .size(size)
        .build()
        .expect("required fields are set")
}

pub(crate) fn oci_digest(digest: Digest) -> oci_spec::image::Digest {
    digest
        .to_string()
        .parse()
        .expect("a sha256 digest is a valid OCI digest")
}

/// Formats seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The image configuration blob for one platform.
pub fn image_config(
    platform: Platform,
    config: &ContainerConfig,
    diff_ids: &[Digest],
    created: u64,
    history_note: &str,
) -> JsonBlob {
    let mut c = ConfigBuilder::default();
    if !config.entrypoint.is_empty() {
        c = c.entrypoint(config.entrypoint.clone());
    }
    if !config.cmd.is_empty() {
        c = c.cmd(config.cmd.clone());
    }
    if !config.env.is_empty() {
        c = c.env(config.env.clone());
    }
    if let Some(user) = &config.user {
        c = c.user(user.clone());
    }
    if let Some(dir) = &config.working_dir {
        c = c.working_dir(dir.clone());
    }
    if !config.exposed_ports.is_empty() {
        c = c.exposed_ports(config.exposed_ports.clone());
    }
    if !config.labels.is_empty() {
        c = c.labels(
            config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    if let Some(sig) = &config.stop_signal {
        c = c.stop_signal(sig.clone());
    }
    let created = rfc3339(created);
    let oci_platform = platform.to_oci();
    let mut b = ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(oci_platform.architecture().clone())
        .os(Os::Linux)
        .config(c.build().expect("all fields optional"))
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .build()
                .expect("fields set"),
        )
        .history(vec![
            HistoryBuilder::default()
                .created(created)
                .created_by(history_note)
                .build()
                .expect("fields set"),
        ]);
    if let Some(v) = platform.variant {
        b = b.variant(v);
    }
    let configuration: ImageConfiguration = b.build().expect("required fields are set");
    JsonBlob::of(&configuration)
}

/// An image manifest.
pub fn image_manifest(
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
    annotations: &BTreeMap<String, String>,
) -> JsonBlob {
    let mut b = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers);
    if !annotations.is_empty() {
        b = b.annotations(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    let manifest: ImageManifest = b.build().expect("required fields are set");
    JsonBlob::of(&manifest)
}

/// A manifest descriptor with its platform, for an image index.
pub fn platform_manifest_descriptor(
    platform: Platform,
    digest: Digest,
    size: u64,
) -> OciDescriptor {
    let mut d = descriptor(MediaType::ImageManifest, digest, size);
    d.set_platform(Some(platform.to_oci()));
    d
}

/// An image index over per-platform manifests (in the order given).
pub fn image_index(
    manifests: Vec<OciDescriptor>,
    annotations: &BTreeMap<String, String>,
) -> JsonBlob {
    let mut b = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests);
    if !annotations.is_empty() {
        b = b.annotations(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    let index: ImageIndex = b.build().expect("required fields are set");
    JsonBlob::of(&index)
}

/// A descriptor tagged with `org.opencontainers.image.ref.name`, for the layout's index.json.
pub fn tagged(mut d: OciDescriptor, tag: &str) -> OciDescriptor {
    d.set_annotations(Some(HashMap::from([(
        REF_NAME.to_string(),
        tag.to_string(),
    )])));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARM64: Platform = Platform {
        architecture: "arm64",
        variant: None,
    };
    const ARMV7: Platform = Platform {
        architecture: "arm",
        variant: Some("v7"),
    };

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    fn sample_config() -> ContainerConfig {
        ContainerConfig {
            entrypoint: vec!["/usr/sbin/haproxy".into()],
            cmd: vec!["-f".into(), "/etc/haproxy/haproxy.cfg".into()],
            env: vec!["PATH=/usr/sbin:/usr/bin".into()],
            user: Some("haproxy".into()),
            working_dir: Some("/".into()),
            exposed_ports: vec!["443/tcp".into(), "80/tcp".into(), "8404/tcp".into()],
            labels: BTreeMap::from([
                ("z".into(), "1".into()),
                ("a".into(), "2".into()),
                ("m".into(), "3".into()),
            ]),
            stop_signal: Some("SIGUSR1".into()),
        }
    }

    #[test]
    fn config_is_canonical_and_golden() {
        let layer = Digest::of(b"layer");
        let blob = image_config(ARMV7, &sample_config(), &[layer], 1_700_000_000, "cairn");
        let text = String::from_utf8(blob.bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"architecture":"arm","config":{"Cmd":["-f","/etc/haproxy/haproxy.cfg"],"Entrypoint":["/usr/sbin/haproxy"],"Env":["PATH=/usr/sbin:/usr/bin"],"ExposedPorts":{"443/tcp":{},"80/tcp":{},"8404/tcp":{}},"Labels":{"a":"2","m":"3","z":"1"}"#), "{text}");
        assert!(text.contains(r#""variant":"v7""#));
        assert!(text.contains(r#""created":"2023-11-14T22:13:20Z""#));
        for _ in 0..20 {
            assert_eq!(
                image_config(ARMV7, &sample_config(), &[layer], 1_700_000_000, "cairn"),
                blob
            );
        }
        assert_eq!(
            blob.digest.to_string(),
            "sha256:e42670f15f2a224673fc28c1fede3f101c3c089f3dd45a1eb1d137bc8f60e397"
        );
    }

    #[test]
    fn manifest_and_index_shapes() {
        let config = descriptor(MediaType::ImageConfig, Digest::of(b"c"), 1);
        let layer = descriptor(MediaType::ImageLayerGzip, Digest::of(b"l"), 2);
        let m = image_manifest(config, vec![layer], &BTreeMap::new());
        let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(
            v["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let idx = image_index(
            vec![platform_manifest_descriptor(ARM64, m.digest, m.size())],
            &BTreeMap::new(),
        );
        let v: serde_json::Value = serde_json::from_slice(&idx.bytes).unwrap();
        assert_eq!(
            v["manifests"][0]["platform"],
            serde_json::json!({"architecture":"arm64","os":"linux"})
        );
        assert_eq!(v["schemaVersion"], 2);
    }
}
