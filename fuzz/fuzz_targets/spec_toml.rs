//! The human-written specs: a node, an image and the cluster file, as a user may write
//! them. Errors must carry a position inside the text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    let _ = cairn_project::ImageSpec::parse(Path::new("images/fuzz.toml"), text);
    let _ = cairn_project::NodeSpec::parse(Path::new("nodes/fuzz.toml"), text);
    if let Err(e) = cairn_project::ClusterSpec::parse(Path::new("nodes/cluster.toml"), text) {
        let _ = e.to_string();
    }
});
