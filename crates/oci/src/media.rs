//! Every media and artifact type Cairn writes or reads, defined once.

/// An OCI image manifest (also every artifact manifest Cairn writes).
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image configuration.
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The empty descriptor's `{}` (an artifact manifest's config).
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Bytes of no declared type (a pinned input in a bundle, an action's output).
pub const OCTET_STREAM: &str = "application/octet-stream";
/// A Debian binary package (a pinned input in a bundle).
pub const DEBIAN_PACKAGE: &str = "application/vnd.debian.binary-package";
pub const TEXT: &str = "text/plain";

/// A node artifact's artifact type.
pub const NODE_ARTIFACT: &str = "application/vnd.cairn.node.v1";
/// A node's raw disk image.
pub const DISK: &str = "application/vnd.cairn.disk.raw.v1";
/// One zstd chunk of a node's disk image, as published.
pub const DISK_CHUNK: &str = "application/vnd.cairn.disk.raw.v1+zstd.chunk";
pub const KERNEL: &str = "application/vnd.cairn.kernel.v1";
pub const INITRAMFS: &str = "application/vnd.cairn.initramfs.v1+gzip";
pub const SQUASHFS: &str = "application/vnd.cairn.squashfs.v1";
pub const IPXE: &str = "application/vnd.cairn.ipxe.v1";
/// A disk image's block map (bmaptool's format 2.0).
pub const BMAP: &str = "application/vnd.cairn.bmap.v2+xml";

/// An action-cache entry's artifact type, and its record blob.
pub const ACTION_ARTIFACT: &str = "application/vnd.cairn.action.v1";
pub const ACTION_RECORD: &str = "application/vnd.cairn.action.v1+json";
/// The inputs of a bundle (`export --with-inputs`).
pub const INPUTS_ARTIFACT: &str = "application/vnd.cairn.inputs.v1";
/// The signatures the store keeps beside an artifact (`NAME.sig`).
pub const SIGNATURES_ARTIFACT: &str = "application/vnd.cairn.signatures.v1+json";
/// An SPDX 2.3 JSON document.
pub const SPDX: &str = "application/spdx+json";

/// cosign's simple-signing payload, and its signature and attestation artifact types.
pub const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const COSIGN_SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const COSIGN_ATTESTATION_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.att.v1+json";
/// An in-toto statement, and the DSSE envelope that signs one.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
