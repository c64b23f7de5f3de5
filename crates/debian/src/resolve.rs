//! Dependency closure over one architecture's index: Pre-Depends and Depends, with
//! alternatives and Provides; never Recommends or Suggests.
//!
//! Rules, in order, for each dependency group:
//! 1. a group already satisfied by a selected package (by name or Provides) adds nothing;
//! 2. a group naming an excluded package adds nothing;
//! 3. otherwise the first alternative that some package satisfies is taken: a real package
//!    of that name wins; a virtual name with one provider takes it; with several
//!    providers, the one the user requested wins, and if none was requested that is an
//!    ambiguity error asking the user to pick.

use crate::packages::{Dependency, Package, PackageIndex};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The closure, sorted by name.
    pub packages: Vec<Package>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// A requested package is not in the index.
    NotFound { package: String, arch: String },
    /// A requested name is virtual and several packages provide it.
    RequestedVirtual {
        package: String,
        providers: Vec<String>,
    },
    /// No alternative of a dependency can be satisfied.
    Missing {
        needed_by: String,
        dependency: String,
        arch: String,
    },
    /// A virtual dependency with several providers, none of them requested.
    Ambiguous {
        needed_by: String,
        dependency: String,
        providers: Vec<String>,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { package, arch } => {
                write!(
                    f,
                    "package {package:?} does not exist for {arch}: check its name in `packages`, or the suite and components"
                )
            }
            ResolveError::RequestedVirtual { package, providers } => write!(
                f,
                "{package:?} is a virtual package provided by {}: write one of them into `packages` instead",
                providers.join(", ")
            ),
            ResolveError::Missing {
                needed_by,
                dependency,
                arch,
            } => write!(
                f,
                "{needed_by} depends on `{dependency}`, which no package for {arch} satisfies: add a component that has it, or add the name to `exclude`"
            ),
            ResolveError::Ambiguous {
                needed_by,
                dependency,
                providers,
            } => write!(
                f,
                "{needed_by} depends on `{dependency}`, provided by {}: write the one you want into `packages` (or `exclude` the dependency)",
                providers.join(", ")
            ),
        }
    }
}

impl std::error::Error for ResolveError {}

struct State<'a> {
    index: &'a PackageIndex,
    arch: &'a str,
    requested: BTreeSet<&'a str>,
    exclude: BTreeSet<&'a str>,
    selected: BTreeMap<String, &'a Package>,
    /// Names (real and provided) that the selection satisfies, with the providing versions.
    provided: BTreeMap<String, Vec<Option<String>>>,
    queue: VecDeque<&'a Package>,
}

impl<'a> State<'a> {
    fn select(&mut self, p: &'a Package) {
        if self.selected.contains_key(&p.name) {
            return;
        }
        self.selected.insert(p.name.clone(), p);
        self.provided
            .entry(p.name.clone())
            .or_default()
            .push(Some(p.version.clone()));
        for prov in &p.provides {
            let version = prov.constraint.as_ref().map(|(_, v)| v.clone());
            self.provided
                .entry(prov.name.clone())
                .or_default()
                .push(version);
        }
        self.queue.push_back(p);
    }

    fn satisfied(&self, dep: &Dependency) -> bool {
        let Some(versions) = self.provided.get(&dep.name) else {
            return false;
        };
        match &dep.constraint {
            None => true,
            Some((rel, want)) => versions.iter().flatten().any(|have| rel.holds(have, want)),
        }
    }

    /// Packages that could satisfy `dep`: the real package, else the providers.
    fn candidates(&self, dep: &Dependency) -> Vec<&'a Package> {
        if let Some(p) = self.index.packages.get(&dep.name) {
            let ok = match &dep.constraint {
                None => true,
                Some((rel, want)) => rel.holds(&p.version, want),
            };
            if ok {
                return vec![p];
            }
        }
        let mut out = Vec::new();
        for name in self.index.providers.get(&dep.name).into_iter().flatten() {
            let p = &self.index.packages[name];
            let ok = p.provides.iter().any(|prov| {
                prov.name == dep.name
                    && match (&dep.constraint, &prov.constraint) {
                        (None, _) => true,
                        (Some((rel, want)), Some((_, have))) => rel.holds(have, want),
                        (Some(_), None) => false,
                    }
            });
            if ok {
                out.push(p);
            }
        }
        out
    }
}

/// Resolves the closure of `requested` in `index` (one architecture, `arch` for messages).
pub fn resolve(
    index: &PackageIndex,
    arch: &str,
    requested: &[String],
    exclude: &[String],
) -> Result<Resolution, ResolveError> {
    let mut state = State {
        index,
        arch,
        requested: requested.iter().map(String::as_str).collect(),
        exclude: exclude.iter().map(String::as_str).collect(),
        selected: BTreeMap::new(),
        provided: BTreeMap::new(),
        queue: VecDeque::new(),
    };
    for name in requested {
        match index.packages.get(name) {
            Some(p) => state.select(p),
            None => {
                let providers = index.providers.get(name).cloned().unwrap_or_default();
                match providers.as_slice() {
                    [] => {
                        return Err(ResolveError::NotFound {
                            package: name.clone(),
                            arch: arch.to_string(),
                        });
                    }
                    [one] => state.select(&index.packages[one]),
                    _ => {
                        return Err(ResolveError::RequestedVirtual {
                            package: name.clone(),
                            providers,
                        });
                    }
                }
            }
        }
    }
    while let Some(p) = state.queue.pop_front() {
        for group in p.pre_depends.iter().chain(&p.depends) {
            if group
                .iter()
                .any(|d| state.satisfied(d) || state.exclude.contains(d.name.as_str()))
            {
                continue;
            }
            let mut chosen = None;
            for dep in group {
                let candidates = state.candidates(dep);
                match candidates.as_slice() {
                    [] => continue,
                    [one] => chosen = Some(*one),
                    many => {
                        let wanted: Vec<&Package> = many
                            .iter()
                            .copied()
                            .filter(|c| state.requested.contains(c.name.as_str()))
                            .collect();
                        match wanted.as_slice() {
                            [one] => chosen = Some(*one),
                            _ => {
                                return Err(ResolveError::Ambiguous {
                                    needed_by: p.name.clone(),
                                    dependency: dep.to_string(),
                                    providers: many.iter().map(|c| c.name.clone()).collect(),
                                });
                            }
                        }
                    }
                }
                break;
            }
            match chosen {
                Some(c) => state.select(c),
                None => {
                    let text: Vec<String> = group.iter().map(|d| d.to_string()).collect();
                    return Err(ResolveError::Missing {
                        needed_by: p.name.clone(),
                        dependency: text.join(" | "),
                        arch: state.arch.to_string(),
                    });
                }
            }
        }
    }
    Ok(Resolution {
        packages: state.selected.into_values().cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(text: &str) -> PackageIndex {
        let mut full = String::new();
        for (i, para) in text.split("\n\n").enumerate() {
            full.push_str(para.trim());
            full.push_str(&format!(
                "\nArchitecture: amd64\nFilename: pool/p{i}.deb\nSize: 1\nSHA256: {}\n\n",
                "ab".repeat(32)
            ));
        }
        let mut idx = PackageIndex::default();
        idx.add(&full, "test").unwrap();
        idx
    }

    fn names(r: &Resolution) -> Vec<&str> {
        r.packages.iter().map(|p| p.name.as_str()).collect()
    }

    const IDX: &str = "Package: app\nVersion: 1\nDepends: libc6 (>= 2), awk, mail-transport-agent | exim4, libgone | libalt\nPre-Depends: init-helper\n\n\
Package: libc6\nVersion: 2.41\n\n\
Package: mawk\nVersion: 1.3\nProvides: awk\n\n\
Package: gawk\nVersion: 5\nProvides: awk\n\n\
Package: exim4\nVersion: 4\n\n\
Package: libalt\nVersion: 1\n\n\
Package: init-helper\nVersion: 1\nDepends: libc6 (>= 3) | libc6-compat\n\n\
Package: libc6-compat\nVersion: 1\nProvides: libc6 (= 3.0)";

    #[test]
    fn ambiguity_names_the_providers() {
        let err = resolve(&index(IDX), "amd64", &["app".into()], &[]).unwrap_err();
        assert_eq!(
            err,
            ResolveError::Ambiguous {
                needed_by: "app".into(),
                dependency: "awk".into(),
                providers: vec!["gawk".into(), "mawk".into()]
            }
        );
        assert!(
            err.to_string()
                .contains("write the one you want into `packages`")
        );
    }

    #[test]
    fn closure_with_choice_alternatives_and_versioned_provides() {
        let r = resolve(&index(IDX), "amd64", &["app".into(), "mawk".into()], &[]).unwrap();
        assert_eq!(
            names(&r),
            [
                "app",
                "exim4",
                "init-helper",
                "libalt",
                "libc6",
                "libc6-compat",
                "mawk"
            ]
        );
    }

    #[test]
    fn exclude_and_missing() {
        let r = resolve(
            &index(IDX),
            "amd64",
            &["app".into(), "gawk".into()],
            &["exim4".into(), "init-helper".into()],
        )
        .unwrap();
        assert_eq!(names(&r), ["app", "gawk", "libalt", "libc6"]);
        let err = resolve(
            &index("Package: a\nVersion: 1\nDepends: b (>= 2) | c"),
            "amd64",
            &["a".into()],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            ResolveError::Missing {
                needed_by: "a".into(),
                dependency: "b (>= 2) | c".into(),
                arch: "amd64".into()
            }
        );
        let err = resolve(&index(IDX), "amd64", &["nope".into()], &[]).unwrap_err();
        assert!(matches!(err, ResolveError::NotFound { .. }));
        let err = resolve(&index(IDX), "amd64", &["awk".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("gawk, mawk"), "{err}");
    }
}
