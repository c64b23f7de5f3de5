//! Signed publishing, in cosign's format, against Debian's docker-registry on 127.0.0.1:
//! `keygen`, `publish --sign` (a Cairn key and an openssl key on the same manifests),
//! an independent check of each signature with skopeo (which fetches the payload) and
//! `openssl dgst -verify`, and `pull --verify-key` refusing what is unsigned, signed by
//! another key, signed for another digest, or altered; and a build cache whose entries
//! are signed when published and substituted only when the right key signed them for the
//! step.

use crate::support;

use std::path::Path;
use std::process::Command;
use support::registry::{Auth, Registry, b64std};
use support::{copy_project, json, require_tool, run_err, run_ok, xtask};

const USER: &str = "ci-robot";
const PASSWORD: &str = "s3cret-robot-pw";

struct Site {
    reg: Registry,
    dir: tempfile::TempDir,
    auth_file: std::path::PathBuf,
}

impl Site {
    /// docker-registry with the robot's basic auth, and an auth file that logs in to it.
    fn start() -> Site {
        let reg = Registry::start(Auth::Basic {
            user: USER.into(),
            password: PASSWORD.into(),
        });
        let dir = tempfile::tempdir().unwrap();
        let auth_file = dir.path().join("auth.json");
        std::fs::write(
            &auth_file,
            format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
                reg.host,
                b64std(format!("{USER}:{PASSWORD}").as_bytes())
            ),
        )
        .unwrap();
        Site {
            reg,
            dir,
            auth_file,
        }
    }

    fn xtask(&self, root: &Path) -> Command {
        let mut c = xtask(root);
        c.env("REGISTRY_AUTH_FILE", &self.auth_file);
        c
    }

    /// A copy of the example project, and `keygen` key pairs of `names` under `keys/`.
    fn project_with_keys(&self, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let project = self.dir.path().join("project");
        copy_project(&project);
        let keys = self.dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        for k in names {
            run_ok(
                self.xtask(&project)
                    .args(["keygen", "--output"])
                    .arg(keys.join(k)),
            );
        }
        (project, keys)
    }

    fn target(&self) -> String {
        format!("{}/homelab", self.reg.host)
    }

    fn skopeo(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(require_tool("skopeo", "skopeo"))
                .args(args)
                .arg("--authfile")
                .arg(&self.auth_file),
        )
    }

    /// curl against the registry's API with the robot's credentials.
    fn curl(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> String {
        let file = self.dir.path().join("curl-body");
        std::fs::write(&file, body).unwrap();
        run_ok(
            Command::new(require_tool("curl", "curl"))
                .args(["-fsS", "-X", method, "-u", &format!("{USER}:{PASSWORD}")])
                .args(["-H", &format!("Content-Type: {content_type}")])
                .arg("--data-binary")
                .arg(format!("@{}", file.display()))
                .arg(format!("http://{}/v2/{path}", self.reg.host)),
        )
    }

    /// Uploads a blob to `repo`: POST starts an upload, PUT to its Location ends it.
    fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", support::sha256_hex(bytes));
        let headers = run_ok(
            Command::new(require_tool("curl", "curl"))
                .args([
                    "-fsS",
                    "-o",
                    "/dev/null",
                    "-D",
                    "-",
                    "-X",
                    "POST",
                    "-u",
                    &format!("{USER}:{PASSWORD}"),
                ])
                .arg(format!("http://{}/v2/{repo}/blobs/uploads/", self.reg.host)),
        );
        let location = headers
            .lines()
            .find_map(|l| {
                l.strip_prefix("Location: ")
                    .or_else(|| l.strip_prefix("location: "))
            })
            .unwrap_or_else(|| panic!("no Location in {headers}"))
            .trim()
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = if location.starts_with("http") {
            format!("{location}{sep}digest={digest}")
        } else {
            format!("http://{}{location}{sep}digest={digest}", self.reg.host)
        };
        let file = self.dir.path().join("blob-body");
        std::fs::write(&file, bytes).unwrap();
        run_ok(
            Command::new(require_tool("curl", "curl"))
                .args(["-fsS", "-X", "PUT", "-u", &format!("{USER}:{PASSWORD}")])
                .args([
                    "-H",
                    "Content-Type: application/octet-stream",
                    "--data-binary",
                ])
                .arg(format!("@{}", file.display()))
                .arg(url),
        );
        digest
    }
}

fn openssl() -> std::path::PathBuf {
    require_tool("openssl", "openssl")
}

/// Checks a signature manifest's layer the way an outsider would: skopeo copies the
/// signature "image" (payload blob included) to a directory, openssl verifies the
/// annotation's signature over the payload bytes with the public key.
fn openssl_verifies(site: &Site, repo: &str, digest: &str, public: &Path) -> Vec<bool> {
    let tag = format!("sha256-{}.sig", &digest[7..]);
    let out = site.dir.path().join(format!("sig-{}", &digest[7..19]));
    let _ = std::fs::remove_dir_all(&out);
    site.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/{repo}:{tag}", site.reg.host),
        &format!("dir:{}", out.display()),
    ]);
    let manifest = json(&std::fs::read_to_string(out.join("manifest.json")).unwrap());
    let mut results = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        let payload = out.join(&layer["digest"].as_str().unwrap()[7..]);
        let claims = json(&std::fs::read_to_string(&payload).unwrap());
        assert_eq!(
            claims["critical"]["image"]["docker-manifest-digest"],
            digest
        );
        assert_eq!(
            claims["critical"]["type"],
            "cosign container image signature"
        );
        assert_eq!(
            claims["critical"]["identity"]["docker-reference"],
            format!("{}/{repo}", site.reg.host)
        );
        let sig = support::b64decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        );
        let sig_file = out.join("sig.der");
        std::fs::write(&sig_file, sig).unwrap();
        let o = Command::new(openssl())
            .args(["dgst", "-sha256", "-verify"])
            .arg(public)
            .arg("-signature")
            .arg(&sig_file)
            .arg(&payload)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.success(), said.contains("Verified OK"), "{said}");
        results.push(o.status.success());
    }
    results
}

/// The attestations on `digest`, each checked by openssl: the envelope's signature over
/// the DSSE pre-authentication encoding, with `public`. Returns (predicate type, statement).
fn attestations(
    site: &Site,
    repo: &str,
    digest: &str,
    public: &Path,
) -> Vec<(String, serde_json::Value)> {
    let out = site.dir.path().join(format!("att-{}", &digest[7..19]));
    let _ = std::fs::remove_dir_all(&out);
    site.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!(
            "docker://{}/{repo}:sha256-{}.att",
            site.reg.host,
            &digest[7..]
        ),
        &format!("dir:{}", out.display()),
    ]);
    let manifest = json(&std::fs::read_to_string(out.join("manifest.json")).unwrap());
    let mut found = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
        let predicate = layer["annotations"]["predicateType"]
            .as_str()
            .unwrap()
            .to_string();
        let envelope = json(
            &std::fs::read_to_string(out.join(&layer["digest"].as_str().unwrap()[7..])).unwrap(),
        );
        assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
        let body = support::b64decode(envelope["payload"].as_str().unwrap());
        let mut pae =
            format!("DSSEv1 28 application/vnd.in-toto+json {} ", body.len()).into_bytes();
        pae.extend_from_slice(&body);
        let pae_file = out.join("pae");
        std::fs::write(&pae_file, &pae).unwrap();
        let sig_file = out.join("sig.der");
        std::fs::write(
            &sig_file,
            support::b64decode(envelope["signatures"][0]["sig"].as_str().unwrap()),
        )
        .unwrap();
        let o = Command::new(openssl())
            .args(["dgst", "-sha256", "-verify"])
            .arg(public)
            .arg("-signature")
            .arg(&sig_file)
            .arg(&pae_file)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Verified OK"),
            "{predicate}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        found.push((predicate, json(&String::from_utf8(body).unwrap())));
    }
    found
}

/// An openssl P-256 key pair (PKCS#8 PEM), as a CI would bring.
fn openssl_key(pem: &Path, public: &Path) {
    run_ok(
        Command::new(openssl())
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(pem),
    );
    run_ok(
        Command::new(openssl())
            .args(["pkey", "-pubout", "-in"])
            .arg(pem)
            .arg("-out")
            .arg(public),
    );
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn signed_publishes_verify_with_openssl_and_carry_attestations_a_second_key_signs_beside() {
    let site = Site::start();
    let project = site.dir.path().join("project");
    copy_project(&project);
    let keys = site.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();

    // Cairn's key, and an openssl one (PKCS#8 PEM P-256) as a CI would bring.
    let id = run_ok(
        site.xtask(&project)
            .args(["keygen", "--output"])
            .arg(keys.join("cairn")),
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let mode = std::fs::metadata(keys.join("cairn.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let err = run_err(
        site.xtask(&project)
            .args(["keygen", "--output"])
            .arg(keys.join("cairn")),
    );
    assert!(err.contains("exists: refusing to replace a key"), "{err}");
    let ci_key = keys.join("ci.pem");
    openssl_key(&ci_key, &keys.join("ci.pub"));
    // The key is read before anything is built or pushed.
    let err = run_err(
        site.xtask(&project)
            .args([
                "publish",
                "haproxy",
                "--to",
                &site.target(),
                "--insecure",
                "--sign",
            ])
            .arg(keys.join("cairn.pub")),
    );
    assert!(
        err.contains("holds no private key") && err.contains("cairn.pub"),
        "{err}"
    );

    let publish = |key: &Path| {
        json(&run_ok(
            site.xtask(&project)
                .args([
                    "publish",
                    "haproxy",
                    "--to",
                    &site.target(),
                    "--insecure",
                    "--json",
                    "--sign",
                ])
                .arg(key),
        ))
    };
    let first = publish(&keys.join("cairn.key"));
    let p = &first["published"][0];
    let index = p["digest"].as_str().unwrap().to_string();
    let signatures: Vec<&str> = p["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        signatures.len(),
        4,
        "the index and its three manifests: {signatures:?}"
    );
    assert_eq!(signatures[0], format!("sha256-{}.sig", &index[7..]));
    assert_eq!(
        openssl_verifies(&site, "homelab/haproxy", &index, &keys.join("cairn.pub")),
        [true]
    );
    // Every per-arch manifest is signed too.
    let raw = json(&site.skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/homelab/haproxy:latest", site.reg.host),
    ]));
    for m in raw["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        assert_eq!(
            openssl_verifies(&site, "homelab/haproxy", d, &keys.join("cairn.pub")),
            [true]
        );
    }

    // The SBOM and the provenance, attached as DSSE envelopes signed with the same key:
    // openssl checks each signature over the PAE bytes; the SPDX document validates.
    assert_eq!(p["attestations"], format!("sha256-{}.att", &index[7..]));
    let statements = attestations(&site, "homelab/haproxy", &index, &keys.join("cairn.pub"));
    assert_eq!(statements.len(), 2, "{statements:?}");
    for (predicate, statement) in &statements {
        assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(statement["predicateType"], predicate.as_str());
        assert_eq!(statement["subject"][0]["digest"]["sha256"], &index[7..]);
        assert_eq!(
            statement["subject"][0]["name"],
            format!("{}/homelab/haproxy", site.reg.host)
        );
        match predicate.as_str() {
            "https://spdx.dev/Document" => {
                let file = site.dir.path().join("attested.spdx.json");
                std::fs::write(&file, statement["predicate"].to_string()).unwrap();
                let tool = std::env::var_os("PATH")
                    .into_iter()
                    .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .map(|d| d.join("pyspdxtools"))
                    .find(|p| p.is_file())
                    .expect("pyspdxtools: `cargo xtask test` installs it");
                let o = Command::new(tool).arg("-i").arg(&file).output().unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                assert!(
                    statement["predicate"]["packages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "libc6")
                );
            }
            "https://slsa.dev/provenance/v1" => {
                let lock = std::fs::read(project.join("inputs.lock")).unwrap();
                let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
                    .as_array()
                    .unwrap();
                assert!(deps.contains(&serde_json::json!({"uri": "inputs.lock", "digest": {"sha256": support::sha256_hex(&lock)}})), "{deps:?}");
                let spec = std::fs::read(project.join("images/haproxy.toml")).unwrap();
                assert!(deps.contains(&serde_json::json!({"uri": "images/haproxy.toml", "digest": {"sha256": support::sha256_hex(&spec)}})));
                assert_eq!(
                    statement["predicate"]["runDetails"]["builder"]["id"],
                    format!(
                        "https://cairn.invalid/builder/{}",
                        cairn_steps::BUILDER_VERSION
                    )
                );
            }
            other => panic!("unexpected predicate {other}"),
        }
    }

    // A second key adds its signature beside the first; signing again adds nothing.
    publish(&ci_key);
    assert_eq!(
        openssl_verifies(&site, "homelab/haproxy", &index, &keys.join("ci.pub")),
        [false, true]
    );
    assert_eq!(
        openssl_verifies(&site, "homelab/haproxy", &index, &keys.join("cairn.pub")),
        [true, false]
    );
    publish(&ci_key);
    assert_eq!(
        openssl_verifies(&site, "homelab/haproxy", &index, &keys.join("ci.pub")).len(),
        2
    );
    // The attestations are the latest signer's (same predicate types replace, as cosign's
    // --replace does).
    assert_eq!(
        attestations(&site, "homelab/haproxy", &index, &keys.join("ci.pub")).len(),
        2
    );

    // The key never went anywhere but its file.
    let key_text = std::fs::read_to_string(keys.join("cairn.key")).unwrap();
    let body: String = key_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!site.reg.log().contains(&body[..40]));
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn pull_verify_key_refuses_a_strangers_unsigned_replayed_or_altered_signature() {
    let site = Site::start();
    let (project, keys) = site.project_with_keys(&["cairn", "ci", "stranger"]);
    // haproxy signed by two keys.
    let publish = |key: &str| {
        json(&run_ok(
            site.xtask(&project)
                .args([
                    "publish",
                    "haproxy",
                    "--to",
                    &site.target(),
                    "--insecure",
                    "--json",
                    "--sign",
                ])
                .arg(keys.join(key)),
        ))
    };
    let first = publish("cairn.key");
    let index = first["published"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    publish("ci.key");
    // (Fetches the signature manifest and its blobs into the site's directory, which the
    // forgeries below are made of.)
    assert_eq!(
        openssl_verifies(&site, "homelab/haproxy", &index, &keys.join("cairn.pub")),
        [true, false]
    );

    // pull --verify-key into an empty checkout: either key is accepted, a stranger's not.
    let offline = site.dir.path().join("offline");
    copy_project(&offline);
    let pull = |name: &str, key: &str| {
        let mut c = site.xtask(&offline);
        c.args([
            "pull",
            name,
            "--from",
            &site.target(),
            "--insecure",
            "--json",
            "--verify-key",
        ])
        .arg(keys.join(key));
        c
    };
    let out = json(&run_ok(&mut pull("haproxy", "cairn.pub")));
    assert_eq!(out["pulled"][0]["digest"], index.as_str());
    run_ok(&mut pull("haproxy", "ci.pub"));
    let err = run_err(&mut pull("haproxy", "stranger.pub"));
    assert!(
        err.contains(&format!(
            "{}/homelab/haproxy@{index} is not signed by",
            site.reg.host
        )) && err.contains("stranger.pub")
            && err.contains("2 signature(s)")
            && err.contains("does not verify"),
        "{err}"
    );

    // Unsigned: refused, and nothing of it tagged in the store.
    let unsigned = json(&run_ok(site.xtask(&project).args([
        "publish",
        "keepalived",
        "--to",
        &site.target(),
        "--insecure",
        "--json",
    ])));
    let keepalived = unsigned["published"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        unsigned["published"][0]["signatures"],
        serde_json::json!([])
    );
    let err = run_err(&mut pull("keepalived", "cairn.pub"));
    assert!(
        err.contains(&format!(
            "homelab/keepalived@{keepalived} is not signed (there is no sha256-{}.sig)",
            &keepalived[7..]
        )),
        "{err}"
    );
    let index_json = std::fs::read_to_string(offline.join("artifacts/index.json")).unwrap();
    assert!(
        !index_json.contains("keepalived"),
        "a refused pull tags nothing"
    );

    // A valid signature replayed onto another digest: haproxy's signature manifest under
    // keepalived's signature tag (its blobs uploaded to keepalived's repository).
    let sig_dir = site.dir.path().join(format!("sig-{}", &index[7..19]));
    let sig_manifest = std::fs::read(sig_dir.join("manifest.json")).unwrap();
    let m = json(&String::from_utf8(sig_manifest.clone()).unwrap());
    for blob in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
        let bytes = std::fs::read(sig_dir.join(&blob["digest"].as_str().unwrap()[7..])).unwrap();
        site.put_blob("homelab/keepalived", &bytes);
    }
    let keepalived_sig = format!(
        "homelab/keepalived/manifests/sha256-{}.sig",
        &keepalived[7..]
    );
    site.curl(
        "PUT",
        &keepalived_sig,
        "application/vnd.oci.image.manifest.v1+json",
        &sig_manifest,
    );
    let err = run_err(&mut pull("keepalived", "cairn.pub"));
    assert!(
        err.contains(&format!("it signs {index}, not {keepalived}")),
        "{err}"
    );

    // An altered payload (the claim rewritten to keepalived's digest) under the original
    // signature: the signature no longer verifies.
    let layer = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            let payload = std::fs::read(sig_dir.join(&l["digest"].as_str().unwrap()[7..])).unwrap();
            let sig = support::b64decode(
                l["annotations"]["dev.cosignproject.cosign/signature"]
                    .as_str()
                    .unwrap(),
            );
            let f = site.dir.path().join("check.der");
            std::fs::write(&f, sig).unwrap();
            let p = site.dir.path().join("check.payload");
            std::fs::write(&p, payload).unwrap();
            Command::new(openssl())
                .args(["dgst", "-sha256", "-verify"])
                .arg(keys.join("cairn.pub"))
                .arg("-signature")
                .arg(&f)
                .arg(&p)
                .output()
                .unwrap()
                .status
                .success()
        })
        .unwrap()
        .clone();
    let payload = std::fs::read(sig_dir.join(&layer["digest"].as_str().unwrap()[7..])).unwrap();
    let altered = String::from_utf8(payload)
        .unwrap()
        .replace(&index, &keepalived)
        .replace("homelab/haproxy", "homelab/keepalived")
        .into_bytes();
    let altered_digest = site.put_blob("homelab/keepalived", &altered);
    let mut forged = m.clone();
    forged["layers"] = serde_json::json!([{
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "size": altered.len(),
        "digest": altered_digest,
        "annotations": layer["annotations"],
    }]);
    site.curl(
        "PUT",
        &keepalived_sig,
        "application/vnd.oci.image.manifest.v1+json",
        forged.to_string().as_bytes(),
    );
    let err = run_err(&mut pull("keepalived", "cairn.pub"));
    assert!(
        err.contains("is not signed by") && err.contains("its signature does not verify with key"),
        "{err}"
    );
    let index_json = std::fs::read_to_string(offline.join("artifacts/index.json")).unwrap();
    assert!(!index_json.contains("keepalived"));
    // cosign's encrypted key format, password from COSIGN_PASSWORD: signing keeps the
    // (forged) signature already there and adds a good one, which pull then accepts.
    run_ok(
        site.xtask(&project)
            .env("COSIGN_PASSWORD", "pw 1")
            .args(["keygen", "--encrypt", "--output"])
            .arg(keys.join("enc")),
    );
    let enc = std::fs::read_to_string(keys.join("enc.key")).unwrap();
    assert!(
        enc.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
        "{enc}"
    );
    let sign_keepalived = |password: Option<&str>| {
        let mut c = site.xtask(&project);
        c.env_remove("COSIGN_PASSWORD");
        if let Some(p) = password {
            c.env("COSIGN_PASSWORD", p);
        }
        c.args([
            "publish",
            "keepalived",
            "--to",
            &site.target(),
            "--insecure",
            "--json",
            "--sign",
        ])
        .arg(keys.join("enc.key"));
        c
    };
    let err = run_err(&mut sign_keepalived(None));
    assert!(err.contains("set COSIGN_PASSWORD"), "{err}");
    let err = run_err(&mut sign_keepalived(Some("pw 2")));
    assert!(err.contains("does not open it"), "{err}");
    run_ok(&mut sign_keepalived(Some("pw 1")));
    assert_eq!(
        openssl_verifies(
            &site,
            "homelab/keepalived",
            &keepalived,
            &keys.join("enc.pub")
        ),
        [false, true]
    );
    let out = json(&run_ok(&mut pull("keepalived", "enc.pub")));
    assert_eq!(out["pulled"][0]["digest"], keepalived.as_str());
}

/// The action keys a store recorded (`cache/actions/<hex>.json`).
fn action_keys(store: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(store.join("cache/actions"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string()
        })
        .collect();
    keys.sort();
    keys
}

/// A registry build cache that anyone with push rights could fill: with a key, entries are
/// signed when published, and substituted only when that key signed them for that step.
#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn the_build_cache_substitutes_only_entries_its_key_signed_for_the_step() {
    let site = Site::start();
    let (project, keys) = site.project_with_keys(&["a", "b"]);
    let stores = site.dir.path().join("stores");
    let build = |store: &str, trust: &[&str], image: &str| {
        let mut c = support::xtask_store(&project, &stores.join(store));
        c.env("REGISTRY_AUTH_FILE", &site.auth_file).args([
            "--cache",
            &site.target(),
            "--cache-insecure",
        ]);
        for t in trust {
            c.arg(t.replace("KEYS", keys.to_str().unwrap()));
        }
        let out = c.args(["build-image", image, "--json"]).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{stderr}");
        (json(&String::from_utf8(out.stdout).unwrap()), stderr)
    };
    let cached = |out: &serde_json::Value| -> Vec<bool> {
        out["manifests"]
            .as_object()
            .unwrap()
            .values()
            .map(|m| m["cached"] == true)
            .collect()
    };

    // Signed when published.
    let (signed, _) = build("one", &["--cache-sign", "KEYS/a.key"], "haproxy");
    assert_eq!(cached(&signed), [false, false, false]);
    let tags = site.curl(
        "GET",
        "homelab/cairn-cache/tags/list",
        "application/json",
        b"",
    );
    let haproxy_keys = action_keys(&stores.join("one"));
    for k in &haproxy_keys {
        assert!(
            tags.contains(&format!("\"{k}\"")),
            "entry {k} published: {tags}"
        );
    }
    assert!(
        tags.matches(".sig\"").count() >= haproxy_keys.len(),
        "every entry signed: {tags}"
    );

    // Substituted with that key's public half.
    let (b, err) = build("two", &["--cache-verify-key", "KEYS/a.pub"], "haproxy");
    assert_eq!(cached(&b), [true, true, true], "{err}");
    assert_eq!(b["index"], signed["index"]);
    assert!(!err.contains("warning"), "{err}");

    // Another key: every entry ignored with a warning, every step built, same digests.
    let (c, err) = build("three", &["--cache-verify-key", "KEYS/b.pub"], "haproxy");
    assert_eq!(cached(&c), [false, false, false]);
    assert_eq!(c["index"], signed["index"]);
    assert!(
        err.contains("warning: ignoring build-cache entry")
            && err.contains("is not signed by")
            && err.contains("b.pub"),
        "{err}"
    );

    // Unsigned entries (pushed by anyone with push rights): ignored.
    build("four", &[], "keepalived");
    let (e, err) = build("five", &["--cache-verify-key", "KEYS/a.pub"], "keepalived");
    assert_eq!(cached(&e), [false, false, false]);
    assert!(err.contains("is not signed (there is no sha256-"), "{err}");

    // A signed entry replayed under another step's tag: ignored, since the signature covers
    // the step it names.
    let victim = action_keys(&stores.join("four"));
    let (_, manifest) = {
        let raw = site.skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!(
                "docker://{}/homelab/cairn-cache:{}",
                site.reg.host, haproxy_keys[0]
            ),
        ]);
        ((), raw)
    };
    for k in &victim {
        site.curl(
            "PUT",
            &format!("homelab/cairn-cache/manifests/{k}"),
            "application/vnd.oci.image.manifest.v1+json",
            manifest.trim_end().as_bytes(),
        );
    }
    let (f, err) = build("six", &["--cache-verify-key", "KEYS/a.pub"], "keepalived");
    assert_eq!(cached(&f), [false, false, false]);
    assert!(
        err.contains(&format!(
            "it is not the entry of this step (its dev.cairn.action is {})",
            haproxy_keys[0]
        )),
        "{err}"
    );
    assert_eq!(f["index"], e["index"]);
}

/// The digests `oras discover` lists as referrers of `reference`, by artifact type.
fn referrers(reference: &str) -> Vec<(String, String)> {
    let out = run_ok(
        Command::new(require_tool(
            "oras",
            "oras (Debian trixie's; `cargo xtask test` installs it)",
        ))
        .args(["discover", "--plain-http", "--format", "json"])
        .args(["-u", USER, "-p", PASSWORD])
        .arg(reference),
    );
    let v = json(&out);
    let mut found: Vec<(String, String)> = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests in {out}"))
        .iter()
        .map(|m| {
            (
                m["artifactType"].as_str().unwrap_or_default().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn signatures_are_referrers_travel_with_pulls_and_bundles_and_are_checked_offline() {
    let site = Site::start();
    let (project, keys) = site.project_with_keys(&["cairn", "stranger"]);
    support::pin_stand_ins(&project);
    let published = json(&run_ok(
        site.xtask(&project)
            .args([
                "publish",
                "pi-worker",
                "--to",
                &site.target(),
                "--insecure",
                "--json",
                "--sign",
            ])
            .arg(keys.join("cairn.key")),
    ));
    let signed = published["published"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // The signature and the attestations name the node as their subject; docker-registry
    // has no referrers API, so Cairn keeps the referrers tag schema's index, which oras
    // reads: exactly the manifests under cosign's .sig and .att tags.
    let tag_digest = |tag: &str| {
        let raw = run_ok(
            Command::new(require_tool("skopeo", "skopeo"))
                .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
                .arg("--authfile")
                .arg(&site.auth_file)
                .arg(format!(
                    "docker://{}/homelab/pi-worker:{tag}",
                    site.reg.host
                )),
        );
        raw.trim().to_string()
    };
    let sig = tag_digest(&format!("sha256-{}.sig", &signed[7..]));
    let att = tag_digest(&format!("sha256-{}.att", &signed[7..]));
    let reference = format!("{}/homelab/pi-worker@{signed}", site.reg.host);
    assert_eq!(
        referrers(&reference),
        [
            (
                "application/vnd.dev.cosign.artifact.att.v1+json".to_string(),
                att.clone()
            ),
            (
                "application/vnd.dev.cosign.artifact.sig.v1+json".to_string(),
                sig.clone()
            ),
        ]
    );
    // A second signer supersedes the listed signature manifest (it holds both signatures).
    run_ok(
        site.xtask(&project)
            .args([
                "publish",
                "pi-worker",
                "--to",
                &site.target(),
                "--insecure",
                "--sign",
            ])
            .arg(keys.join("stranger.key")),
    );
    let sig2 = tag_digest(&format!("sha256-{}.sig", &signed[7..]));
    assert_ne!(sig2, sig);
    let listed = referrers(&reference);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&(
        "application/vnd.dev.cosign.artifact.sig.v1+json".to_string(),
        sig2
    )));

    // An unsigned image beside it, published from the same store.
    run_ok(
        site.xtask(&project)
            .args(["publish", "haproxy", "--to", &site.target(), "--insecure"]),
    );

    // The publishing store keeps the signatures beside the node: export carries them,
    // and import --verify-key checks them with no network.
    let bundle = site.dir.path().join("pi-worker.tar");
    run_ok(
        site.xtask(&project)
            .args(["export", "pi-worker", "--output"])
            .arg(&bundle),
    );
    let empty = |name: &str| {
        let dir = site.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let import = |dir: &Path, bundle: &Path, key: &str| {
        let mut c = support::xtask_store(dir, &dir.join("artifacts"));
        c.args(["import", "--json", "--verify-key"])
            .arg(keys.join(key))
            .arg(bundle);
        c
    };
    let offline = empty("offline");
    let out = json(&run_ok(&mut import(&offline, &bundle, "cairn.pub")));
    let tags: Vec<&str> = out["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["pi-worker", "pi-worker.sbom", "pi-worker.sig"]);
    // Both keys signed it.
    run_ok(&mut import(&empty("offline-2"), &bundle, "stranger.pub"));
    // A key that signed nothing of it: refused, naming the node and its digest; nothing lands.
    run_ok(
        site.xtask(&project)
            .args(["keygen", "--output"])
            .arg(keys.join("third")),
    );
    let refused = empty("refused");
    let err = run_err(&mut import(&refused, &bundle, "third.pub"));
    let node_manifest = {
        let index = std::fs::read_to_string(offline.join("artifacts/index.json")).unwrap();
        let v = json(&index);
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "pi-worker")
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        err.contains(&format!("pi-worker ({node_manifest}) in bundle"))
            && err.contains("is not signed by")
            && err.contains("third.pub")
            && err.contains("none of its 2 signature(s) is by key")
            && err.contains("nothing was imported"),
        "{err}"
    );
    let index = std::fs::read_to_string(refused.join("artifacts/index.json")).unwrap_or_default();
    assert!(!index.contains("pi-worker"), "{index}");

    // A bundle with an unsigned image in it: refused as a whole.
    let mixed = site.dir.path().join("mixed.tar");
    run_ok(
        site.xtask(&project)
            .args(["export", "pi-worker", "haproxy", "--output"])
            .arg(&mixed),
    );
    let err = run_err(&mut import(&empty("mixed"), &mixed, "cairn.pub"));
    assert!(
        err.contains("haproxy (sha256:") && err.contains("carries no signatures"),
        "{err}"
    );

    // flash --verify-key on the offline store: written with the right key, refused (and
    // no card written) with another.
    let flash = |dir: &Path, key: &str, card: &Path| {
        let mut c = support::xtask_store(dir, &dir.join("artifacts"));
        c.args(["flash", "pi-worker", "--json", "--file"])
            .arg(card)
            .arg("--verify-key")
            .arg(keys.join(key));
        c
    };
    let card = site.dir.path().join("card.img");
    let report = json(&run_ok(&mut flash(&offline, "cairn.pub", &card)));
    assert!(report["bytes_written"].as_u64().unwrap() > 0, "{report}");
    let other = site.dir.path().join("other.img");
    let err = run_err(&mut flash(&offline, "third.pub", &other));
    assert!(
        err.contains(&format!("pi-worker ({node_manifest}) in the store"))
            && err.contains("is not signed by"),
        "{err}"
    );
    assert!(!other.exists(), "a refused flash writes nothing");

    // A plain pull (no key) brings the signatures too, so the puller can flash --verify-key
    // later with no network; a store without them is refused.
    let puller = empty("puller");
    run_ok(
        support::xtask_store(&puller, &puller.join("artifacts"))
            .env("REGISTRY_AUTH_FILE", &site.auth_file)
            .args(["pull", "pi-worker", "--from", &site.target(), "--insecure"]),
    );
    run_ok(&mut flash(&puller, "cairn.pub", &puller.join("card.img")));
    // Without its signatures (the NAME.sig tag taken out of the store's index): refused.
    let index_path = puller.join("artifacts/index.json");
    let mut index = json(&std::fs::read_to_string(&index_path).unwrap());
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != "pi-worker.sig");
    std::fs::write(&index_path, index.to_string()).unwrap();
    let err = run_err(&mut flash(&puller, "cairn.pub", &puller.join("again.img")));
    assert!(
        err.contains(&format!("pi-worker ({node_manifest}) in the store"))
            && err.contains("carries no signatures"),
        "{err}"
    );
}
