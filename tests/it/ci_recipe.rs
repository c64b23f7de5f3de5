//! The CI recipe (`examples/ci/publish.yml`) run step by step as a runner would run it
//! (`bash -e` per `run:` block, `$GITHUB_ENV` carried to later steps, secrets in the
//! environment), against docker-registry on loopback: every image and node is built with
//! the registry as a signed build cache and published signed, and a machine that trusts
//! only the public key pulls a node.

use crate::support;

use std::process::Command;
use support::registry::{Auth, Registry};
use support::{copy_project, json, pin_stand_ins, run_ok, xtask};

/// The `run:` blocks of a workflow, with their step names.
fn steps(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut name = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(n) = trimmed.strip_prefix("- name: ") {
            name = n.to_string();
        } else if let Some(rest) = trimmed.strip_prefix("run:") {
            let rest = rest.trim();
            if rest == "|" {
                let mut body = Vec::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let t = l.trim_start();
                    if !t.is_empty() && l.len() - t.len() <= indent {
                        break;
                    }
                    body.push(l.get(indent + 2..).unwrap_or("").to_string());
                    i += 1;
                }
                out.push((name.clone(), body.join("\n")));
                continue;
            }
            out.push((name.clone(), rest.to_string()));
        }
        i += 1;
    }
    out
}

#[test]
#[ignore = "slow: builds from the Debian mirror"]
fn the_ci_recipe_publishes_everything_signed_and_a_verifier_pulls_it() {
    let user = "robot$homelab+ci";
    let secret = "robot-secret-42";
    let reg = Registry::start(Auth::Basic {
        user: user.into(),
        password: secret.into(),
    });
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("checkout");
    copy_project(&checkout);
    pin_stand_ins(&checkout);
    // The key a maintainer made once: the private half becomes the CI secret.
    run_ok(
        xtask(&checkout)
            .args(["keygen", "--output"])
            .arg(tmp.path().join("ci")),
    );
    let key = std::fs::read_to_string(tmp.path().join("ci.key")).unwrap();

    // `cargo xtask` as a runner would run it, in the checkout.
    let shim = tmp.path().join("bin");
    std::fs::create_dir_all(&shim).unwrap();
    std::fs::write(
        shim.join("cargo"),
        format!(
            "#!/bin/sh\n[ \"$1\" = xtask ] || exit 99\nshift\nexec {} --quiet \"$@\"\n",
            env!("CARGO_BIN_EXE_xtask")
        ),
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("755").arg(shim.join("cargo")));
    let runner_temp = tmp.path().join("runner-temp");
    std::fs::create_dir_all(&runner_temp).unwrap();
    let github_env = tmp.path().join("github-env");
    std::fs::write(&github_env, "").unwrap();
    let registry = format!("{}/homelab", reg.host);

    let recipe =
        std::fs::read_to_string(support::repo_root().join("examples/ci/publish.yml")).unwrap();
    let steps = steps(&recipe);
    assert_eq!(steps.len(), 5, "{steps:?}");
    let mut carried: Vec<(String, String)> = Vec::new();
    let mut outputs = String::new();
    for (name, script) in &steps {
        let mut c = Command::new("bash");
        c.args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(&checkout)
            .env_clear()
            .env(
                "PATH",
                format!("{}:{}", shim.display(), std::env::var("PATH").unwrap()),
            )
            .env("HOME", tmp.path())
            .env("REGISTRY", &registry)
            .env("ROBOT_USER", user)
            .env("ROBOT_SECRET", secret)
            .env("COSIGN_KEY", &key)
            .env("COSIGN_PASSWORD", "")
            .env("REGISTRY_FLAGS", "--insecure")
            .env("CACHE_FLAGS", "--cache-insecure")
            .env("RUNNER_TEMP", &runner_temp)
            .env("GITHUB_ENV", &github_env)
            .env(
                "XDG_CACHE_HOME",
                std::env::var("XDG_CACHE_HOME")
                    .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap())),
            );
        if let Ok(m) = std::env::var("CAIRN_DEBIAN_MIRROR") {
            c.env("CAIRN_DEBIAN_MIRROR", m);
        }
        for (k, v) in &carried {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "step {name:?} failed:\n{stdout}\n{stderr}\nregistry log:\n{}",
            reg.log()
        );
        outputs.push_str(&stdout);
        outputs.push_str(&stderr);
        carried = std::fs::read_to_string(&github_env)
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
    }

    // Every image and node went up signed, with its SBOM and provenance.
    let published = json(&std::fs::read_to_string(checkout.join("published.json")).unwrap());
    let names: Vec<&str> = published["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "haproxy",
            "ipxe",
            "keepalived",
            "pi-control",
            "pi-legacy",
            "pi-worker",
            "x86-storage"
        ]
    );
    for p in published["published"].as_array().unwrap() {
        let digest = p["digest"].as_str().unwrap();
        assert_eq!(
            p["signatures"][0],
            format!("sha256-{}.sig", &digest[7..]),
            "{p}"
        );
        assert_eq!(
            p["attestations"],
            format!("sha256-{}.att", &digest[7..]),
            "{p}"
        );
    }
    // The digests were printed, the key and the robot's secret never.
    assert!(outputs.contains(published["published"][5]["digest"].as_str().unwrap()));
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!outputs.contains(&key_body[..32]) && !outputs.contains(secret));
    assert!(
        !runner_temp.join("cosign.key").exists(),
        "the key was removed"
    );
    // The build cache's entries are signed.
    let tags = run_ok(
        Command::new(support::require_tool("curl", "curl"))
            .args(["-fsS", "-u", &format!("{user}:{secret}")])
            .arg(format!(
                "http://{}/v2/homelab/cairn-cache/tags/list",
                reg.host
            )),
    );
    assert!(tags.contains(".sig\""), "{tags}");

    // A machine with only the public key pulls a node, checked.
    let other = tmp.path().join("other");
    copy_project(&other);
    let auth = tmp.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            reg.host,
            support::registry::b64std(format!("{user}:{secret}").as_bytes())
        ),
    )
    .unwrap();
    let mut pull = xtask(&other);
    pull.env("REGISTRY_AUTH_FILE", &auth)
        .args([
            "pull",
            "pi-worker",
            "--from",
            &registry,
            "--insecure",
            "--json",
            "--verify-key",
        ])
        .arg(tmp.path().join("ci.pub"));
    let pulled = json(&run_ok(&mut pull));
    assert_eq!(pulled["pulled"][0]["kind"], "node");
}
