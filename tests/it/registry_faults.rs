//! Faults a real registry will not produce on demand, injected by a proxy in front of
//! Debian's docker-registry: 5xx answers and dropped connections (push completes), a token
//! that expires mid-push (re-authentication), a wrong `Docker-Content-Digest` and corrupted
//! bytes (clear errors, nothing corrupt stored), a connection dropped mid-blob on pull
//! (resumed with a ranged GET), a redirect to another host (no credentials sent there),
//! and an interrupted push run again (only what is missing is uploaded).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use support::proxy::{Fault, Proxy};
use support::registry::{Auth, Registry};
use support::{copy_project, json, run_err, run_ok, xtask, xtask_store};

struct Built {
    dir: PathBuf,
    index: String,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("cairn-faults-")
            .tempdir()
            .unwrap()
            .keep();
        copy_project(&dir);
        let image = json(&run_ok(xtask(&dir).args([
            "build-image",
            "haproxy",
            "--json",
        ])));
        Built {
            index: image["index"]["digest"].as_str().unwrap().to_string(),
            dir,
        }
    })
}

/// A registry with basic auth whose credentials sit in a Docker config for the proxy's host.
fn setup() -> (Registry, Proxy, tempfile::TempDir) {
    let reg = Registry::start(Auth::Basic {
        user: "ci".into(),
        password: "pw".into(),
    });
    let proxy = Proxy::start(&reg.host);
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"username":"ci","password":"pw"}},"{}":{{"username":"ci","password":"pw"}}}}}}"#,
            proxy.host, reg.host
        ),
    )
    .unwrap();
    (reg, proxy, config)
}

fn publish(dir: &Path, config: &Path, host: &str) -> Command {
    let mut c = xtask(dir);
    c.env("DOCKER_CONFIG", config).args([
        "publish",
        "haproxy",
        "--to",
        &format!("{host}/homelab"),
        "--insecure",
        "--json",
    ]);
    c
}

fn pull(dir: &Path, store: &Path, config: &Path, host: &str) -> Command {
    let mut c = xtask_store(dir, store);
    c.env("DOCKER_CONFIG", config).args([
        "pull",
        "haproxy",
        "--from",
        &format!("{host}/homelab"),
        "--insecure",
        "--json",
    ]);
    c
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn push_survives_5xx_and_dropped_connections() {
    let built = built();
    let (reg, proxy, config) = setup();
    proxy.add("HEAD", "/blobs/", Fault::Status(500), 2);
    proxy.add("POST", "/blobs/uploads/", Fault::Status(503), 1);
    proxy.add("PUT", "/blobs/uploads/", Fault::Drop, 1);
    proxy.add("PUT", "/manifests/", Fault::Status(502), 1);
    let out = json(&run_ok(&mut publish(
        &built.dir,
        config.path(),
        &proxy.host,
    )));
    assert_eq!(out["published"][0]["digest"], built.index.as_str());
    assert!(
        proxy.rules.lock().unwrap().iter().all(|r| r.times == 0),
        "every fault fired"
    );
    // The registry holds the image, byte for byte.
    let store = tempfile::tempdir().unwrap();
    let got = json(&run_ok(&mut pull(
        &built.dir,
        store.path(),
        config.path(),
        &reg.host,
    )));
    assert_eq!(got["pulled"][0]["digest"], built.index.as_str());
    run_ok(xtask_store(&built.dir, store.path()).args(["store", "verify"]));
}

/// The digest of the first layer of the image's first manifest.
fn a_layer(built: &Built) -> String {
    let blob = |d: &str| {
        json(
            &std::fs::read_to_string(
                built
                    .dir
                    .join("artifacts/blobs/sha256")
                    .join(d.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
    };
    let index = blob(&built.index);
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn an_interrupted_push_run_again_uploads_only_what_is_missing() {
    let built = built();
    let (_reg, proxy, config) = setup();
    // The upload of one layer keeps failing: the push stops with a clear error.
    let layer = a_layer(built);
    proxy.add("PUT", &format!("digest={layer}"), Fault::Drop, usize::MAX);
    let err = run_err(&mut publish(&built.dir, config.path(), &proxy.host));
    assert!(
        err.contains("publishing haproxy") && err.contains("/blobs/uploads/"),
        "{err}"
    );
    proxy.clear();
    let again = json(&run_ok(&mut publish(
        &built.dir,
        config.path(),
        &proxy.host,
    )));
    let p = &again["published"][0];
    assert_eq!(p["blobs_uploaded"], 1, "only the missing layer: {p}");
    assert_eq!(
        p["blobs_present"].as_u64().unwrap(),
        p["blobs"].as_u64().unwrap() - 1
    );
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn a_wrong_docker_content_digest_fails_the_push_clearly() {
    let built = built();
    let (_reg, proxy, config) = setup();
    proxy.add("PUT", "/blobs/uploads/", Fault::WrongDigest, usize::MAX);
    let err = run_err(&mut publish(&built.dir, config.path(), &proxy.host));
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(
        err.contains(&format!("got sha256:{}", "0".repeat(64))),
        "{err}"
    );
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn pull_resumes_a_dropped_blob_and_refuses_corrupt_bytes() {
    let built = built();
    let (reg, proxy, config) = setup();
    run_ok(&mut publish(&built.dir, config.path(), &reg.host));

    proxy.add("GET", "/blobs/sha256:", Fault::TruncateBody(1 << 20), 2);
    let store = tempfile::tempdir().unwrap();
    let out = json(&run_ok(&mut pull(
        &built.dir,
        store.path(),
        config.path(),
        &proxy.host,
    )));
    assert_eq!(out["pulled"][0]["digest"], built.index.as_str());
    assert!(out["pulled"][0]["resumed"].as_u64().unwrap() >= 1, "{out}");
    // Each resume is one more GET of a blob than there are blobs.
    let blob_gets = proxy.count("GET", "/blobs/sha256:");
    assert!(
        blob_gets > out["pulled"][0]["blobs"].as_u64().unwrap() as usize,
        "{blob_gets}"
    );
    run_ok(xtask_store(&built.dir, store.path()).args(["store", "verify"]));

    proxy.clear();
    proxy.add("GET", "/blobs/sha256:", Fault::Corrupt, usize::MAX);
    let bad = tempfile::tempdir().unwrap();
    let err = run_err(&mut pull(
        &built.dir,
        bad.path(),
        config.path(),
        &proxy.host,
    ));
    assert!(
        err.contains("digest mismatch") && err.contains("nothing was stored"),
        "{err}"
    );
    let blobs: Vec<_> = std::fs::read_dir(bad.path().join("blobs/sha256"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    for b in &blobs {
        let bytes = std::fs::read(b.path()).unwrap();
        assert_eq!(
            support::sha256_hex(&bytes),
            b.file_name().to_string_lossy(),
            "every stored blob matches its name"
        );
    }
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn a_redirect_to_another_host_gets_no_credentials() {
    let built = built();
    let (reg, proxy, config) = setup();
    run_ok(&mut publish(&built.dir, config.path(), &reg.host));
    // Another host (another port) serving the blobs, through a recording proxy.
    let files = support::server::Server::start(built.dir.join("artifacts/blobs"));
    let other = Proxy::start(files.url.trim_start_matches("http://"));
    let layer = a_layer(built);
    let layer = layer.as_str();
    let hex = layer.trim_start_matches("sha256:");
    proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        Fault::Redirect(format!("http://{}/sha256/{hex}", other.host)),
        usize::MAX,
    );
    let store = tempfile::tempdir().unwrap();
    let out = json(&run_ok(&mut pull(
        &built.dir,
        store.path(),
        config.path(),
        &proxy.host,
    )));
    assert_eq!(out["pulled"][0]["digest"], built.index.as_str());
    let seen = other.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "the blob came from the other host: {seen:?}");
    assert!(
        !seen[0].authorization,
        "no credentials went to the other host"
    );
    assert!(
        proxy.seen.lock().unwrap().iter().any(|s| s.authorization),
        "the registry itself got them"
    );
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn a_token_expiring_mid_push_is_renewed() {
    let built = built();
    let reg = Registry::start(Auth::Token {
        user: "robot$homelab+ci".into(),
        password: "s".into(),
        lifetime_s: 600,
        advertised_s: 600,
    });
    let proxy = Proxy::start(&reg.host);
    let realm = reg.realm.clone().unwrap();
    // After the first blob request, the registry says the token expired (once).
    proxy.add(
        "PUT",
        "/blobs/uploads/",
        Fault::Unauthorized(format!(
            r#"Bearer realm="{realm}",service="cairn-test-registry",scope="repository:homelab/haproxy:pull,push",error="invalid_token""#
        )),
        1,
    );
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"username":"robot$homelab+ci","password":"s"}}}}}}"#,
            proxy.host
        ),
    )
    .unwrap();
    let before = reg.tokens_issued.load(std::sync::atomic::Ordering::SeqCst);
    let out = json(&run_ok(&mut publish(
        &built.dir,
        config.path(),
        &proxy.host,
    )));
    assert_eq!(out["published"][0]["digest"], built.index.as_str());
    let issued = reg.tokens_issued.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(issued >= 2, "a second token after the expiry: {issued}");
}

/// Harbor answers a push to a project that does not exist with 401 and "project ... not
/// found" (played here by the proxy, as is Harbor's project API): the error says what to do,
/// and `--create-project` creates it through `/api/v2.0/projects`, then pushes.
#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn a_missing_harbor_project_is_explained_or_created() {
    let built = built();
    let (_reg, proxy, config) = setup();
    let not_found = || {
        Fault::Respond(
            401,
            "Basic realm=\"harbor\"".into(),
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"project homelab not found: project homelab not found"}]}"#.into(),
        )
    };
    for method in ["HEAD", "GET", "POST"] {
        proxy.add(method, "/v2/homelab/", not_found(), usize::MAX);
    }
    let err = run_err(&mut publish(&built.dir, config.path(), &proxy.host));
    assert!(
        err.contains("project homelab does not exist: create project homelab in Harbor, or pass --create-project"),
        "{err}"
    );
    assert_eq!(proxy.count("POST", "/api/v2.0/projects"), 0);

    proxy.add("POST", "/api/v2.0/projects", Fault::RespondAndClear(201), 1);
    let out = json(&run_ok(
        publish(&built.dir, config.path(), &proxy.host).arg("--create-project"),
    ));
    assert_eq!(out["published"][0]["digest"], built.index.as_str());
    assert_eq!(proxy.count("POST", "/api/v2.0/projects"), 1);
    let creates: Vec<_> = proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.contains("/api/v2.0/projects"))
        .map(|s| s.authorization)
        .collect();
    assert_eq!(creates, [true], "the API call carries the credentials");
}

#[test]
#[ignore = "slow: runs docker-registry"]
fn a_plain_http_registry_reached_over_tls_says_to_pass_insecure() {
    let reg = Registry::start(Auth::Basic {
        user: "ci".into(),
        password: "pw".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    copy_project(dir.path());
    let err = run_err(xtask(dir.path()).args([
        "pull",
        "haproxy",
        "--from",
        &format!("{}/homelab", reg.host),
    ]));
    assert!(
        err.contains(&format!("https://{}/v2/", reg.host))
            && err.contains("the registry answered in plain HTTP, not TLS")
            && err.contains("pass --insecure"),
        "{err}"
    );
}

#[test]
#[ignore = "slow: runs docker-registry"]
fn a_registry_that_stops_answering_is_said_at_once_and_given_up_on_in_bounded_time() {
    let reg = Registry::start(Auth::Basic {
        user: "ci".into(),
        password: "pw".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    copy_project(dir.path());
    let pid = reg.pid().to_string();
    run_ok(Command::new("kill").args(["-STOP", &pid]));
    let start = std::time::Instant::now();
    let out = xtask(dir.path())
        .env("CAIRN_REGISTRY_TIMEOUT", "2")
        .args([
            "pull",
            "haproxy",
            "--from",
            &format!("{}/homelab", reg.host),
            "--insecure",
        ])
        .output()
        .unwrap();
    let took = start.elapsed();
    run_ok(Command::new("kill").args(["-CONT", &pid]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // Visible while it waits (stderr is no terminal here), and a clear end naming the host.
    assert!(
        err.contains(&format!(
            "waiting for the registry: GET http://{}/v2/",
            reg.host
        )) && err.contains("no answer for 1 s (an attempt waits 2 s)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("http://{}/v2/", reg.host))
            && err.contains("no answer within 2 s")
            && err.contains("is the registry up and reachable?"),
        "{err}"
    );
    // Each of the five attempts waited its 2 s (one notice each), then the pull gave up.
    let notices = err.matches("waiting for the registry: ").count();
    assert!((5..=10).contains(&notices), "{notices} notices: {err}");
    eprintln!("(gave up after {took:?})");
}
