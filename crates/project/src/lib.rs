//! Typed models of Cairn's human-written specs: `nodes/cluster.toml`, `nodes/<node>.toml`
//! and `images/<image>.toml`, with validation whose errors name the file, line and key.

pub mod board;
mod error;
mod image;
mod node;
mod values;

pub use error::SpecError;
pub use image::{
    ContainerSettings, DirSpec, DownloadSpec, FileSpec, GroupSpec, ImageKind, ImageSpec,
    SymlinkSpec, UserSpec,
};
pub use node::{
    Board, BootMethod, ClusterSpec, Distribution, KUBEADM_LAST_ARM_MINOR, KubernetesSpec,
    NetworkSpec, NodeSpec, Role,
};
pub use values::{Arch, Cidr, Hostname, MacAddress, Mode, Name};

use std::path::{Path, PathBuf};

/// Everything under a project root: the cluster, its nodes and the images.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub cluster: ClusterSpec,
    pub nodes: Vec<NodeSpec>,
    pub images: Vec<ImageSpec>,
}

impl Project {
    /// Loads and validates every spec under `root` (`images/*.toml`, `nodes/*.toml`).
    pub fn load(root: &Path) -> Result<Project, SpecError> {
        let images = load_dir(&root.join("images"), |path| ImageSpec::load(path))?;
        let cluster_path = root.join("nodes/cluster.toml");
        let cluster = ClusterSpec::load(&cluster_path)?;
        let mut nodes = Vec::new();
        for path in toml_files(&root.join("nodes"))? {
            if path.file_name().is_some_and(|n| n == "cluster.toml") {
                continue;
            }
            let node = NodeSpec::load(&path)?;
            node.check_image(&images)?;
            node.check_cluster(&cluster, &images)?;
            node.check_unique(&nodes)?;
            nodes.push(node);
        }
        Ok(Project {
            root: root.to_path_buf(),
            cluster,
            nodes,
            images,
        })
    }

    pub fn image(&self, name: &str) -> Option<&ImageSpec> {
        self.images.iter().find(|i| i.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, SpecError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SpecError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| SpecError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn load_dir<T>(
    dir: &Path,
    load: impl Fn(&Path) -> Result<T, SpecError>,
) -> Result<Vec<T>, SpecError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    toml_files(dir)?.iter().map(|p| load(p)).collect()
}

/// Name of a spec file without directory and `.toml`.
pub(crate) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
