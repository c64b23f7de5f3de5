//! In-toto attestations attached to what `publish --sign` pushes (cosign's `.att` tag, DSSE
//! envelopes signed with the same key): the SBOM (`sbom`) and SLSA provenance: the builder
//! (`cairn` and `BUILDER_VERSION`) and the materials (inputs.lock, the spec files, the git
//! commit). Neither holds a time or a path of the machine, so a rebuild attests the same.

use cairn_formats::Digest;
use cairn_inputs::lockfile::Lockfile;
use cairn_project::Project;
use cairn_registry::Client;
use cairn_steps::{BUILDER_VERSION, Context, Error};
use cairn_store::Store;
use serde_json::{Value, json};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const SLSA_PREDICATE: &str = "https://slsa.dev/provenance/v1";
/// What a Cairn build is, for SLSA's `buildType`.
pub const BUILD_TYPE: &str = "https://cairn.invalid/build/v1";

/// An in-toto statement about `digest` in `repository`.
pub fn statement(
    repository: &str,
    digest: &Digest,
    predicate_type: &str,
    predicate: Value,
) -> Vec<u8> {
    let doc = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": digest.hex()}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    });
    cairn_formats::json::to_canonical_vec(&doc).expect("json")
}

fn file_digest(path: &std::path::Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::at(path.display(), e))?;
    Ok(Digest::of(&bytes).hex())
}

/// SLSA provenance v1 of `name`: its spec files and the lock by digest, and the git commit
/// of the checkout when it is one (with whether it had uncommitted changes).
pub fn provenance(
    ctx: &Context,
    project: &Project,
    name: &str,
    kind: &str,
) -> Result<Value, Error> {
    let root = &project.root;
    let mut files = vec!["inputs.lock".to_string()];
    if let Some(node) = project.node(name) {
        files.push("nodes/cluster.toml".into());
        files.push(format!("nodes/{name}.toml"));
        files.push(format!("images/{}.toml", node.image.get_ref()));
    } else {
        files.push(format!("images/{name}.toml"));
    }
    let mut deps = Vec::new();
    for f in &files {
        deps.push(json!({"uri": f, "digest": {"sha256": file_digest(&root.join(f))?}}));
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut internal = json!({"builder_version": BUILDER_VERSION});
    if let Some(commit) = git(&["rev-parse", "HEAD"]).filter(|c| c.len() == 40) {
        deps.push(json!({"uri": "git+checkout", "digest": {"gitCommit": commit}}));
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        internal["git_uncommitted_changes"] = json!(dirty);
    }
    let _ = ctx;
    Ok(json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"name": name, "kind": kind},
            "internalParameters": internal,
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": format!("https://cairn.invalid/builder/{BUILDER_VERSION}"), "version": {"cairn": BUILDER_VERSION}},
            "metadata": {},
        },
    }))
}

/// Signs the SBOM and the provenance of `name` (pushed as `digest` to `repo`) and attaches
/// them. Returns the attestation tag.
#[allow(clippy::too_many_arguments)]
pub fn attach(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    client: &Client,
    store: &Store,
    repo: &str,
    name: &str,
    kind: &str,
    subject: &cairn_registry::Descriptor,
    key: &cairn_trust::SigningKey,
) -> Result<String, Error> {
    let digest = &subject.digest;
    let repository = format!("{}/{repo}", client.config.host);
    let sbom: Value = serde_json::from_slice(&crate::sbom::sbom(ctx, project, lock, name, &[])?)
        .expect("the SBOM is JSON");
    let provenance = provenance(ctx, project, name, kind)?;
    let attestations = vec![
        (
            cairn_trust::dsse::envelope(key, &statement(&repository, digest, SPDX_PREDICATE, sbom)),
            SPDX_PREDICATE.to_string(),
        ),
        (
            cairn_trust::dsse::envelope(
                key,
                &statement(&repository, digest, SLSA_PREDICATE, provenance),
            ),
            SLSA_PREDICATE.to_string(),
        ),
    ];
    Ok(cairn_registry::signatures::attest(
        client,
        store,
        repo,
        subject,
        &attestations,
    )?)
}
