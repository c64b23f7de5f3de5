//! `sbom`: an SPDX 2.3 JSON document for an image or a node, made from the lock alone:
//! every Debian package (name, version, arch, the .deb's sha256, a purl, and its license
//! where the package's copyright file is machine-readable), every URL input with its
//! sha256, and what contains what. The same lock gives the same bytes: the creation time is
//! the image's `source_date_epoch` and the namespace derives from the content.

use cairn_formats::Digest;
use cairn_inputs::fetch::{Cache, Download};
use cairn_inputs::lockfile::{LockedPackage, Lockfile};
use cairn_project::{Arch, ImageKind, Project};
use cairn_steps::{BUILDER_VERSION, Context, Error};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One URL input (a Kubernetes binary, an image's download).
struct UrlInput {
    name: String,
    url: String,
    sha256: String,
}

/// What the document describes: the artifact's packages and URL inputs, per arch.
struct Contents<'a> {
    kind: &'static str,
    suite: String,
    epoch: u64,
    packages: Vec<&'a LockedPackage>,
    urls: Vec<UrlInput>,
}

fn contents<'a>(
    project: &Project,
    lock: &'a Lockfile,
    name: &str,
    arches: &[Arch],
) -> Result<Contents<'a>, Error> {
    let (kind, image_name, arches, urls): (&str, &str, Vec<Arch>, Vec<UrlInput>) = if let Some(
        node,
    ) =
        project.node(name)
    {
        if !arches.is_empty() && arches != [node.arch] {
            return Err(Error::msg(format!(
                "node {name} is {}: --arch cannot ask for another",
                node.arch
            )));
        }
        let inputs = cairn_inputs::kubernetes::inputs(&project.cluster, node.arch);
        let urls = cairn_inputs::kubernetes::pins(lock, &inputs)?
            .into_iter()
            .map(|(i, d, _)| UrlInput {
                name: i.name,
                url: i.url,
                sha256: d.hex(),
            })
            .collect();
        ("node", node.image.get_ref().as_str(), vec![node.arch], urls)
    } else if let Some(spec) = project.image(name) {
        if spec.kind == ImageKind::Os {
            return Err(Error::msg(format!(
                "{name} is an OS image: ask for the SBOM of a node built from it"
            )));
        }
        let arches = if arches.is_empty() {
            spec.arches.clone()
        } else {
            for a in arches {
                if !spec.arches.contains(a) {
                    return Err(Error::msg(format!(
                        "image {name} is not built for {a} (its arches: {})",
                        spec.arches
                            .iter()
                            .map(|a| a.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            arches.to_vec()
        };
        let mut urls = Vec::new();
        for d in &spec.downloads {
            for a in &arches {
                let url = d.url_for(*a);
                let pin = lock.url.iter().find(|u| u.url == url).ok_or_else(|| {
                        Error::msg(format!(
                            "inputs.lock has no pin for download {} ({url}) of image {name}: run `cargo xtask lock`",
                            d.name
                        ))
                    })?;
                urls.push(UrlInput {
                    name: pin.name.clone(),
                    url,
                    sha256: pin.sha256.clone(),
                });
            }
        }
        ("image", name, arches, urls)
    } else {
        return Err(Error::msg(format!(
            "{name:?} is neither an image (images/{name}.toml) nor a node (nodes/{name}.toml)"
        )));
    };
    let spec = project
        .image(image_name)
        .ok_or_else(|| Error::msg(format!("no image named {image_name:?}")))?;
    let locked = lock.image_for(spec)?;
    let mut packages: Vec<&LockedPackage> = Vec::new();
    for a in &arches {
        packages.extend(lock.packages(locked, *a)?);
    }
    packages.sort();
    packages.dedup();
    let mut urls = urls;
    urls.sort_by(|a, b| a.url.cmp(&b.url));
    urls.dedup_by(|a, b| a.url == b.url);
    Ok(Contents {
        kind,
        suite: locked.suite.clone(),
        epoch: locked.epoch(spec),
        packages,
        urls,
    })
}

/// `name` with only what SPDX ids allow: letters, digits, `.` and `-`.
fn clean(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An SPDX element id, made unique by a digest.
fn spdx_id(kind: &str, name: &str, unique: &str) -> String {
    format!(
        "SPDXRef-{kind}-{}-{}",
        clean(name),
        &unique[..12.min(unique.len())]
    )
}

/// Percent-encodes what a purl component may not hold literally.
fn purl_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The GNU licenses' Debian names (`GPL-2+`, `LGPL-2.1`, `GPL-3.0+`) as SPDX ids.
fn gnu_license(name: &str) -> Option<String> {
    let (family, rest) = ["AGPL-", "LGPL-", "GPL-", "GFDL-"]
        .iter()
        .find_map(|f| name.strip_prefix(f).map(|r| (&f[..f.len() - 1], r)))?;
    let (version, later) = match rest.strip_suffix('+') {
        Some(v) => (v, true),
        None => (rest, false),
    };
    let version = match version {
        "1" | "1.0" => "1.0",
        "2" | "2.0" => "2.0",
        "2.1" => "2.1",
        "3" | "3.0" => "3.0",
        "1.1" | "1.2" | "1.3" if family == "GFDL" => version,
        _ => return None,
    };
    Some(format!(
        "{family}-{version}-{}",
        if later { "or-later" } else { "only" }
    ))
}

/// Debian's short license names (copyright-format 1.0) as SPDX identifiers.
fn spdx_license(debian: &str) -> Option<String> {
    let name = debian.trim();
    if let Some(id) = gnu_license(name) {
        return Some(id);
    }
    Some(
        match name {
            "Apache-2.0" | "Apache-2" => "Apache-2.0",
            "Expat" | "MIT" => "MIT",
            "BSD-2-clause" | "BSD-2-Clause" => "BSD-2-Clause",
            "BSD-3-clause" | "BSD-3-Clause" => "BSD-3-Clause",
            "BSD-4-clause" | "BSD-4-Clause" => "BSD-4-Clause",
            "ISC" => "ISC",
            "Zlib" | "zlib" => "Zlib",
            "MPL-1.1" => "MPL-1.1",
            "MPL-2.0" => "MPL-2.0",
            "CC0-1.0" | "CC0" => "CC0-1.0",
            "OpenSSL" => "OpenSSL",
            "PSF-2" => "PSF-2.0",
            "Artistic-2.0" => "Artistic-2.0",
            "X11" => "X11",
            "curl" => "curl",
            "Unicode-DFS-2016" => "Unicode-DFS-2016",
            _ => return None,
        }
        .to_string(),
    )
}

/// The declared license of a machine-readable copyright file (its `Files: *` paragraph) as
/// an SPDX expression, and the `LicenseRef-` names it uses for licenses SPDX has no id for.
fn declared_license(copyright: &str) -> Option<(String, Vec<(String, String)>)> {
    let paragraphs: Vec<&str> = copyright.split("\n\n").collect();
    let header = paragraphs.first()?;
    if !header
        .lines()
        .any(|l| l.starts_with("Format:") && l.contains("copyright-format/1.0"))
    {
        return None;
    }
    let field = |p: &str, name: &str| -> Option<String> {
        p.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
    };
    let files_all = paragraphs
        .iter()
        .find(|p| field(p, "Files").is_some_and(|f| f.split_whitespace().any(|w| w == "*")))?;
    let license = field(files_all, "License")?;
    if license.is_empty() {
        return None;
    }
    let mut refs = Vec::new();
    let mut expr = Vec::new();
    // `A or B`, `A and B`, `A, and B`; `with ... exception` is kept as a LicenseRef.
    let normalized = license.replace(", and ", " and ").replace(", or ", " or ");
    for word in normalized.split_whitespace() {
        match word {
            "or" => expr.push("OR".to_string()),
            "and" | "," => expr.push("AND".to_string()),
            _ => {
                let name = word.trim_end_matches(',');
                let id = match spdx_license(name) {
                    Some(id) => id,
                    None => {
                        let id = format!("LicenseRef-Debian-{}", clean(name));
                        // The license's own paragraph, when the file has one.
                        let text = paragraphs
                            .iter()
                            .find(|p| {
                                field(p, "Files").is_none()
                                    && field(p, "License").as_deref() == Some(name)
                            })
                            .map(|p| p.trim().to_string())
                            .unwrap_or_else(|| format!("License: {name} (as the package's Debian copyright file names it)"));
                        refs.push((id.clone(), text));
                        id
                    }
                };
                expr.push(id);
            }
        }
    }
    // A dangling operator (`with`, an odd list) makes no valid expression.
    let valid = !expr.is_empty()
        && expr
            .iter()
            .enumerate()
            .all(|(i, t)| (t == "OR" || t == "AND") == (i % 2 == 1))
        && expr.len() % 2 == 1;
    if !valid {
        return None;
    }
    Some((expr.join(" "), refs))
}

/// The copyright file of each package, read from its .deb in the download cache (fetched
/// first when missing), two packages at a time.
fn copyrights(
    ctx: &Context,
    packages: &[&LockedPackage],
    mirror: Option<&str>,
) -> Result<BTreeMap<String, String>, Error> {
    let cache = Cache::new(&ctx.cache);
    let mut missing = Vec::new();
    for p in packages {
        let sha = Digest::from_hex(&p.sha256)
            .map_err(|e| Error::at(format!("inputs.lock: package {}", p.name), e))?;
        if !cache.has(&sha) {
            let mirror = cairn_inputs::mirror::resolve(mirror)?;
            missing.push(Download {
                name: format!("{} {} {}", p.name, p.version, p.arch),
                url: format!("{mirror}/{}", p.path),
                sha256: sha,
                size: Some(p.size),
            });
        }
    }
    cache.fetch_all(&missing, ctx.progress)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new(BTreeMap::new());
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = packages.get(i) else { break };
                    let sha = Digest::from_hex(&p.sha256).expect("checked");
                    let want = format!("usr/share/doc/{}/copyright", p.name);
                    let mut text = None;
                    let result = std::fs::File::open(cache.path(&sha))
                        .map_err(|e| e.to_string())
                        .and_then(|f| {
                            let r = cairn_debian::deb::unpack_data(f, &p.name, |entry, body| {
                                if entry.path == want {
                                    let mut t = String::new();
                                    body.read_to_string(&mut t)?;
                                    text = Some(t);
                                    // Found: stop reading this package.
                                    return Err(std::io::Error::other("found"));
                                }
                                Ok(())
                            });
                            match (r, &text) {
                                (_, Some(_)) | (Ok(_), None) => Ok(()),
                                (Err(e), None) => Err(e.to_string()),
                            }
                        });
                    match result {
                        Ok(()) => {
                            if let Some(t) = text {
                                found.lock().expect("lock").insert(p.sha256.clone(), t);
                            }
                        }
                        Err(e) => {
                            *failed.lock().expect("lock") = Some(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(Error::at("reading copyright files", e));
    }
    Ok(found.into_inner().expect("lock"))
}

/// The SPDX 2.3 JSON document of image or node `name` (for `arches`, or all of an image's).
pub fn sbom(
    ctx: &Context,
    project: &Project,
    lock: &Lockfile,
    name: &str,
    arches: &[Arch],
) -> Result<Vec<u8>, Error> {
    let c = contents(project, lock, name, arches)?;
    let mirror = project
        .node(name)
        .and_then(|n| project.image(n.image.get_ref()))
        .or_else(|| project.image(name))
        .and_then(|s| s.mirror.clone());
    let copyrights = copyrights(ctx, &c.packages, mirror.as_deref())?;
    let root_id = format!(
        "SPDXRef-{}-{}",
        if c.kind == "node" { "Node" } else { "Image" },
        clean(name)
    );
    let mut packages = vec![json!({
        "SPDXID": root_id,
        "name": name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": if c.kind == "node" { "OPERATING-SYSTEM" } else { "CONTAINER" },
        "comment": format!("Cairn {} {name}, built from inputs.lock", c.kind),
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root_id,
    })];
    let mut extracted: BTreeMap<String, String> = BTreeMap::new();
    for p in &c.packages {
        let id = spdx_id("deb", &format!("{}-{}", p.name, p.arch), &p.sha256);
        let license = copyrights.get(&p.sha256).and_then(|t| declared_license(t));
        let declared = match license {
            Some((expr, refs)) => {
                for (r, text) in refs {
                    extracted.entry(r).or_insert(text);
                }
                expr
            }
            None => "NOASSERTION".to_string(),
        };
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "supplier": "Organization: Debian",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!(
                    "pkg:deb/debian/{}@{}?arch={}&distro={}",
                    p.name,
                    purl_encode(&p.version),
                    p.arch,
                    purl_encode(&c.suite)
                ),
            }],
        }));
        relationships.push(json!({
            "spdxElementId": root_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    for u in &c.urls {
        let id = spdx_id("url", &u.name, &u.sha256);
        packages.push(json!({
            "SPDXID": id,
            "name": u.name,
            "downloadLocation": u.url,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": u.sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        relationships.push(json!({
            "spdxElementId": root_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name} ({})", c.kind),
        "creationInfo": {
            "created": cairn_oci::rfc3339(c.epoch),
            "creators": [format!("Tool: {BUILDER_VERSION}")],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(
            extracted
                .into_iter()
                .map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": id.trim_start_matches("LicenseRef-Debian-")}))
                .collect(),
        );
    }
    // The namespace names this content: the same lock gives the same document.
    let content = Digest::of(&cairn_formats::json::to_canonical_vec(&doc).expect("json"));
    doc["documentNamespace"] = Value::String(format!(
        "https://cairn.invalid/spdx/{name}/{}",
        content.hex()
    ));
    Ok(cairn_formats::json::to_canonical_vec(&doc).expect("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_readable_copyright_gives_an_spdx_expression() {
        let file = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: 2020 A\nLicense: GPL-2+ or BSD-3-clause\n\nFiles: debian/*\nLicense: GPL-2+\n";
        assert_eq!(
            declared_license(file),
            Some(("GPL-2.0-or-later OR BSD-3-Clause".into(), vec![]))
        );
        let odd = file.replace("GPL-2+ or BSD-3-clause", "public-domain");
        let odd = format!("{odd}\nLicense: public-domain\n The authors gave it away.\n");
        let (expr, refs) = declared_license(&odd).unwrap();
        assert_eq!(expr, "LicenseRef-Debian-public-domain");
        assert_eq!(refs[0].0, "LicenseRef-Debian-public-domain");
        assert!(refs[0].1.contains("gave it away"), "{refs:?}");
        assert_eq!(
            declared_license("This package was debianized by ...\n"),
            None
        );
        assert_eq!(
            declared_license(
                &file.replace("GPL-2+ or BSD-3-clause", "GPL-2+ with OpenSSL exception")
            ),
            None
        );
        assert_eq!(purl_encode("1:2.41-12+b1"), "1%3A2.41-12%2Bb1");
        for (debian, spdx) in [
            ("GPL-2+", "GPL-2.0-or-later"),
            ("GPL-2.0+", "GPL-2.0-or-later"),
            ("LGPL-2.1", "LGPL-2.1-only"),
            ("GPL-3", "GPL-3.0-only"),
            ("GFDL-1.3+", "GFDL-1.3-or-later"),
            ("Expat", "MIT"),
        ] {
            assert_eq!(spdx_license(debian).as_deref(), Some(spdx), "{debian}");
        }
        assert_eq!(spdx_license("GPL-7"), None);
    }
}
