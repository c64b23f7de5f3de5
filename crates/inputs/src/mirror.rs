//! Where Debian packages come from: the spec's `mirror`, else `CAIRN_DEBIAN_MIRROR`, else
//! the host's apt sources. No mirror host is written in this repository.

use cairn_steps::Error;
use std::path::Path;

pub const ENV: &str = "CAIRN_DEBIAN_MIRROR";

/// The mirror URL (without trailing `/`) for an image.
pub fn resolve(spec_mirror: Option<&str>) -> Result<String, Error> {
    if let Some(m) = spec_mirror {
        return Ok(m.trim_end_matches('/').to_string());
    }
    if let Ok(m) = std::env::var(ENV) {
        if !m.is_empty() {
            return Ok(m.trim_end_matches('/').to_string());
        }
    }
    from_apt_sources(Path::new("/etc/apt")).ok_or_else(|| {
        Error::msg(format!(
            "no Debian mirror: set `mirror` in the image spec or {ENV}, or add a Debian source to /etc/apt/sources.list.d/"
        ))
    })
}

/// The first Debian (not security) archive URL in apt's sources under `apt_dir`.
pub fn from_apt_sources(apt_dir: &Path) -> Option<String> {
    let mut candidates = Vec::new();
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(entries) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut more: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if file.extension().is_some_and(|e| e == "sources") {
            for para in cairn_debian::control::paragraphs(&text) {
                if !para
                    .get("Types")
                    .unwrap_or("")
                    .split_whitespace()
                    .any(|t| t == "deb")
                {
                    continue;
                }
                if para
                    .get("Enabled")
                    .is_some_and(|e| e.eq_ignore_ascii_case("no"))
                {
                    continue;
                }
                let suites = para.get("Suites").unwrap_or("");
                for uri in para.get("URIs").unwrap_or("").split_whitespace() {
                    candidates.push((uri.to_string(), suites.to_string()));
                }
            }
        } else if file.extension().is_some_and(|e| e == "list") {
            for line in text.lines() {
                let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
                if words.next() != Some("deb") {
                    continue;
                }
                // Skip an options block like `[signed-by=...]` (may hold spaces).
                let rest: Vec<&str> = line
                    .split_once(']')
                    .map_or(line, |(_, r)| r)
                    .split_whitespace()
                    .collect();
                let rest: Vec<&str> = rest.into_iter().filter(|w| *w != "deb").collect();
                if let [uri, suite, ..] = rest[..] {
                    candidates.push((uri.to_string(), suite.to_string()));
                }
            }
        }
    }
    candidates
        .into_iter()
        .filter(|(uri, suites)| !uri.contains("security") && !suites.contains("-security"))
        .find(|(uri, _)| uri.trim_end_matches('/').ends_with("/debian"))
        .map(|(uri, _)| uri.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_and_one_line_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://security.example.invalid/debian-security\nSuites: trixie-security\n\nTypes: deb deb-src\nURIs: http://mirror.example.invalid/debian/\nSuites: trixie\n",
        )
        .unwrap();
        assert_eq!(
            from_apt_sources(dir.path()).as_deref(),
            Some("http://mirror.example.invalid/debian")
        );
        std::fs::remove_file(dir.path().join("sources.list.d/debian.sources")).unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "# comment\ndeb [signed-by=/k.gpg] http://m.example.invalid/debian trixie main\n",
        )
        .unwrap();
        assert_eq!(
            from_apt_sources(dir.path()).as_deref(),
            Some("http://m.example.invalid/debian")
        );
        std::fs::write(
            dir.path().join("sources.list"),
            "deb http://archive.example.invalid/ubuntu noble main\n",
        )
        .unwrap();
        assert_eq!(from_apt_sources(dir.path()), None);
    }
}
