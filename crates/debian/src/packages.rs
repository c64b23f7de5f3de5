//! Packages indexes (`dists/SUITE/COMPONENT/binary-ARCH/Packages`).

use crate::control::paragraphs;
use crate::version;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A version relation in a dependency: `(>= 2.36)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Relation {
    pub fn holds(&self, have: &str, want: &str) -> bool {
        let c = version::compare(have, want);
        match self {
            Relation::Lt => c == Ordering::Less,
            Relation::Le => c != Ordering::Greater,
            Relation::Eq => c == Ordering::Equal,
            Relation::Ge => c != Ordering::Less,
            Relation::Gt => c == Ordering::Greater,
        }
    }

    fn as_str(&self) -> &'static str {
        match self {
            Relation::Lt => "<<",
            Relation::Le => "<=",
            Relation::Eq => "=",
            Relation::Ge => ">=",
            Relation::Gt => ">>",
        }
    }
}

/// One alternative of a dependency: a name with an optional version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub constraint: Option<(Relation, String)>,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.constraint {
            Some((rel, v)) => write!(f, "{} ({} {v})", self.name, rel.as_str()),
            None => f.write_str(&self.name),
        }
    }
}

/// Parses `a (>= 1) | b, c:any` into groups of alternatives.
pub fn parse_relations(field: &str) -> Result<Vec<Vec<Dependency>>, String> {
    let mut groups = Vec::new();
    for group in field.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            alts.push(
                parse_one(alt.trim()).ok_or_else(|| format!("cannot parse dependency {alt:?}"))?,
            );
        }
        groups.push(alts);
    }
    Ok(groups)
}

fn parse_one(s: &str) -> Option<Dependency> {
    // Drop architecture restrictions and build profiles, which binary packages don't use.
    let s = match s.find(')') {
        Some(close) => &s[..=close],
        None => s.split(['[', '<']).next()?,
    }
    .trim();
    let (name, constraint) = match s.split_once('(') {
        Some((n, rest)) => {
            let inner = rest.strip_suffix(')')?.trim();
            let (rel, ver) = [
                ("<<", Relation::Lt),
                ("<=", Relation::Le),
                (">=", Relation::Ge),
                (">>", Relation::Gt),
                ("=", Relation::Eq),
                ("<", Relation::Le),
                (">", Relation::Ge),
            ]
            .into_iter()
            .find_map(|(op, rel)| inner.strip_prefix(op).map(|v| (rel, v.trim().to_string())))?;
            (n.trim(), Some((rel, ver)))
        }
        None => (s, None),
    };
    let name = name.split(':').next()?.trim();
    if name.is_empty() {
        return None;
    }
    Some(Dependency {
        name: name.to_string(),
        constraint,
    })
}

/// A binary package as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Debian architecture, or `all`.
    pub arch: String,
    /// Path of the .deb relative to the mirror root (`pool/main/...`).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub pre_depends: Vec<Vec<Dependency>>,
    pub depends: Vec<Vec<Dependency>>,
    /// Provided names with their optional `(= version)`.
    pub provides: Vec<Dependency>,
    pub essential: bool,
}

/// All packages of one architecture, by name (the newest version when a name repeats).
#[derive(Debug, Clone, Default)]
pub struct PackageIndex {
    pub packages: BTreeMap<String, Package>,
    /// Virtual name -> names of the packages that provide it.
    pub providers: BTreeMap<String, Vec<String>>,
}

impl PackageIndex {
    /// Adds the packages of one Packages file (several components go into one index).
    pub fn add(&mut self, text: &str, origin: &str) -> Result<(), String> {
        self.add_paragraphs(text, origin)?;
        self.index_providers();
        Ok(())
    }

    /// Adds the packages of whole paragraphs of a Packages file, without indexing what
    /// they provide: a file read in pieces calls this per piece, then
    /// [`index_providers`](Self::index_providers) once.
    pub fn add_paragraphs(&mut self, text: &str, origin: &str) -> Result<(), String> {
        for para in paragraphs(text) {
            let field = |name: &str| {
                para.get(name)
                    .ok_or_else(|| format!("{origin}: a package has no {name} field"))
            };
            let name = field("Package")?.to_string();
            let ctx = |e: String| format!("{origin}: package {name}: {e}");
            let package = Package {
                version: field("Version")?.to_string(),
                arch: field("Architecture")?.to_string(),
                filename: field("Filename")?.to_string(),
                size: field("Size")?.parse().map_err(|_| ctx("bad Size".into()))?,
                sha256: field("SHA256")?.to_string(),
                pre_depends: parse_relations(para.get("Pre-Depends").unwrap_or("")).map_err(ctx)?,
                depends: parse_relations(para.get("Depends").unwrap_or("")).map_err(ctx)?,
                provides: parse_relations(para.get("Provides").unwrap_or(""))
                    .map_err(ctx)?
                    .into_iter()
                    .flatten()
                    .collect(),
                essential: para.get("Essential") == Some("yes"),
                name: name.clone(),
            };
            if package.sha256.len() != 64 || !package.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(ctx(format!("bad SHA256 {:?}", package.sha256)));
            }
            if package
                .filename
                .split('/')
                .any(|c| c == ".." || c.is_empty())
            {
                return Err(ctx(format!("bad Filename {:?}", package.filename)));
            }
            match self.packages.get(&name) {
                Some(old) if version::compare(&old.version, &package.version) != Ordering::Less => {
                }
                _ => {
                    self.packages.insert(name, package);
                }
            }
        }
        Ok(())
    }

    /// Indexes the virtual names every package provides.
    pub fn index_providers(&mut self) {
        self.providers.clear();
        for p in self.packages.values() {
            for prov in &p.provides {
                self.providers
                    .entry(prov.name.clone())
                    .or_default()
                    .push(p.name.clone());
            }
        }
        for list in self.providers.values_mut() {
            list.sort();
            list.dedup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations() {
        let r = parse_relations(
            "libc6 (>= 2.34), awk | mawk:any (>> 1.3~), debconf (>= 0.5) | debconf-2.0",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0][0].to_string(), "libc6 (>= 2.34)");
        assert_eq!(r[1][1].name, "mawk");
        assert_eq!(r[1][1].to_string(), "mawk (>> 1.3~)");
        assert_eq!(r[2][1].name, "debconf-2.0");
        assert!(parse_relations("a (>= 1").is_err());
        let r = parse_relations("0ad-data (<= 0.27.0-2), b [amd64] <!nocheck>, c (<< 2) [i386]")
            .unwrap();
        assert_eq!(r[0][0].to_string(), "0ad-data (<= 0.27.0-2)");
        assert_eq!(r[1][0].to_string(), "b");
        assert_eq!(r[2][0].to_string(), "c (<< 2)");
    }

    #[test]
    fn index_keeps_newest_and_providers() {
        let text = "Package: a\nVersion: 1.0\nArchitecture: amd64\nFilename: pool/main/a/a_1.0_amd64.deb\nSize: 10\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\nProvides: v\n\n\
Package: a\nVersion: 1.1\nArchitecture: amd64\nFilename: pool/main/a/a_1.1_amd64.deb\nSize: 11\nSHA256: 1111111111111111111111111111111111111111111111111111111111111111\nProvides: v (= 2)\n";
        let mut idx = PackageIndex::default();
        idx.add(text, "test").unwrap();
        assert_eq!(idx.packages["a"].version, "1.1");
        assert_eq!(idx.providers["v"], ["a"]);
        let bad = text.replace("pool/main/a/a_1.0_amd64.deb", "pool/../../etc/passwd");
        assert!(
            PackageIndex::default()
                .add(&bad, "t")
                .unwrap_err()
                .contains("bad Filename")
        );
    }
}
