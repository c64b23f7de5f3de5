//! The crate graph as ARCHITECTURE.md draws it, read from the workspace's manifests: the
//! code map's block is the graph, no stage crate is built on the registry client, and
//! nothing depends on the command line's neighbours (`bench`, `qemu`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each workspace crate's `cairn-*` dependencies (normal ones, not dev-dependencies).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut graph = BTreeMap::new();
    let mut manifests = vec![root.join("xtask/Cargo.toml")];
    for e in std::fs::read_dir(root.join("crates")).unwrap() {
        manifests.push(e.unwrap().path().join("Cargo.toml"));
    }
    for path in manifests {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let name = doc["package"]["name"].as_str().unwrap().to_string();
        let deps = doc
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.keys()
                    .filter(|k| k.starts_with("cairn-"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        graph.insert(name, deps);
    }
    graph
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(c) = todo.pop() {
        for d in graph.get(&c).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn no_stage_crate_is_built_on_the_registry_client() {
    let graph = graph();
    assert!(graph.len() >= 16, "read the workspace: {graph:?}");
    assert!(
        reaches(&graph, "cairn-deliver").contains("cairn-registry"),
        "the check reads real edges: deliver publishes through the registry client"
    );
    for stage in [
        "cairn-steps",
        "cairn-inputs",
        "cairn-os",
        "cairn-node",
        "cairn-pxe",
    ] {
        let below = reaches(&graph, stage);
        for client in ["cairn-registry", "cairn-trust"] {
            assert!(
                !below.contains(client),
                "{stage} depends (directly or through another crate) on {client}: {below:?}"
            );
        }
    }
}

#[test]
fn the_crate_graph_has_no_cycle_and_nothing_depends_on_the_command_lines_neighbours() {
    let graph = graph();
    for c in graph.keys() {
        assert!(
            !reaches(&graph, c).contains(c),
            "{c} depends on itself through {:?}",
            graph[c]
        );
    }
    for (c, deps) in &graph {
        for top in ["xtask", "cairn-bench", "cairn-qemu"] {
            assert!(
                !deps.contains(top) || c == "xtask",
                "{c} depends on {top}, which only the command line may use"
            );
        }
    }
}

/// The code map's block (`crate → deps`, names without `cairn-`) as a graph.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let start = text.find("```text\nformats").expect("the code map's block");
    let block = &text[start + 8..];
    let block = &block[..block.find("```").unwrap()];
    let full = |n: &str| {
        if n == "xtask" {
            n.to_string()
        } else {
            format!("cairn-{n}")
        }
    };
    let mut graph = BTreeMap::new();
    for line in block.lines() {
        match line.split_once('→') {
            Some((name, deps)) => {
                let deps: BTreeSet<String> = deps.split(',').map(|d| full(d.trim())).collect();
                graph.insert(full(name.trim()), deps);
            }
            None => {
                let pure = line.split('(').next().unwrap();
                for n in pure.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    graph.insert(full(n), BTreeSet::new());
                }
            }
        }
    }
    graph
}

#[test]
fn the_architecture_code_map_is_the_crate_graph() {
    let actual = graph();
    let mut documented = documented();
    // `xtask → every crate`.
    let every: BTreeSet<String> = actual.keys().filter(|k| *k != "xtask").cloned().collect();
    assert_eq!(
        documented.insert("xtask".into(), every.clone()),
        Some(BTreeSet::from(["cairn-every crate".to_string()]))
    );
    assert_eq!(actual["xtask"], every, "xtask uses every crate");
    for (name, deps) in &actual {
        assert_eq!(
            documented.get(name),
            Some(deps),
            "ARCHITECTURE.md's code map line for {name} is not what its Cargo.toml says"
        );
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "the code map names crates the workspace does not have"
    );
}
