//! kmod's binary indexes (`modules.dep.bin`, `modules.alias.bin`, `modules.builtin.bin`,
//! `modules.builtin.alias.bin`), as depmod writes them. libkmod (modprobe, udev, systemd)
//! looks modules up only through these: with the text files alone, no module of a running
//! system loads by name or by alias.
//!
//! The format (kmod's `libkmod-index.c`): big-endian words; the magic `B007F457`, version
//! 2.1, the root node's offset; then a radix trie written children first. A node's offset
//! carries flags for what it holds: a NUL-terminated prefix, a child table (first and last
//! byte, then one offset per byte between them, 0 for none), and values (a count, then
//! each value's priority and NUL-terminated text, by priority).

use std::collections::BTreeMap;

const MAGIC: u32 = 0xB007_F457;
const VERSION: u32 = 0x0002_0001;
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;
const NODE_MASK: u32 = 0x0FFF_FFFF;

#[derive(Default)]
struct Node {
    prefix: Vec<u8>,
    children: BTreeMap<u8, Node>,
    /// (priority, value), kept sorted by priority, then by insertion.
    values: Vec<(u32, String)>,
}

impl Node {
    fn insert(&mut self, key: &[u8], value: &str, priority: u32) {
        // Split this node where the key leaves its prefix.
        let common = self
            .prefix
            .iter()
            .zip(key)
            .take_while(|(a, b)| a == b)
            .count();
        if common < self.prefix.len() {
            let rest = self.prefix.split_off(common);
            let old = Node {
                prefix: rest[1..].to_vec(),
                children: std::mem::take(&mut self.children),
                values: std::mem::take(&mut self.values),
            };
            self.children.insert(rest[0], old);
        }
        let key = &key[common..];
        match key.split_first() {
            None => {
                if !self.values.iter().any(|(_, v)| v == value) {
                    let at = self.values.partition_point(|(p, _)| *p <= priority);
                    self.values.insert(at, (priority, value.to_string()));
                }
            }
            Some((first, rest)) => match self.children.get_mut(first) {
                Some(child) => child.insert(rest, value, priority),
                None => {
                    let mut leaf = Node {
                        prefix: rest.to_vec(),
                        ..Node::default()
                    };
                    leaf.values.push((priority, value.to_string()));
                    self.children.insert(*first, leaf);
                }
            },
        }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<u32, String> {
        let mut table = Vec::new();
        if let (Some((&first, _)), Some((&last, _))) = (
            self.children.first_key_value(),
            self.children.last_key_value(),
        ) {
            for c in first..=last {
                table.push(match self.children.get(&c) {
                    Some(child) => child.write(out)?,
                    None => 0,
                });
            }
        }
        let offset = u32::try_from(out.len())
            .ok()
            .filter(|o| *o <= NODE_MASK)
            .ok_or("a module index larger than 256 MiB")?;
        let mut flags = 0;
        if !self.prefix.is_empty() {
            out.extend(&self.prefix);
            out.push(0);
            flags |= NODE_PREFIX;
        }
        if let (Some((&first, _)), Some((&last, _))) = (
            self.children.first_key_value(),
            self.children.last_key_value(),
        ) {
            out.push(first);
            out.push(last);
            for o in table {
                out.extend(o.to_be_bytes());
            }
            flags |= NODE_CHILDS;
        }
        if !self.values.is_empty() {
            out.extend((self.values.len() as u32).to_be_bytes());
            for (priority, value) in &self.values {
                out.extend(priority.to_be_bytes());
                out.extend(value.as_bytes());
                out.push(0);
            }
            flags |= NODE_VALUES;
        }
        Ok(offset | flags)
    }
}

/// An index of `(key, value, priority)` entries. Keys and values must hold no NUL, and
/// keys only ASCII (kmod's child tables stop at 128).
pub fn write_index<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str, u32)>,
) -> Result<Vec<u8>, String> {
    let mut root = Node::default();
    for (key, value, priority) in entries {
        if !key.is_ascii() || key.contains('\0') || value.contains('\0') {
            return Err(format!("module index key {key:?} is not NUL-free ASCII"));
        }
        root.insert(key.as_bytes(), value, priority);
    }
    let mut out = Vec::new();
    out.extend(MAGIC.to_be_bytes());
    out.extend(VERSION.to_be_bytes());
    out.extend([0; 4]);
    let root_offset = root.write(&mut out)?;
    out[8..12].copy_from_slice(&root_offset.to_be_bytes());
    Ok(out)
}

/// An alias as libkmod compares it: `-` becomes `_` except inside `[...]`; `None` for an
/// unbalanced bracket (depmod skips those).
pub fn normalize_alias(alias: &str) -> Option<String> {
    let mut out = String::with_capacity(alias.len());
    let mut chars = alias.chars();
    while let Some(c) = chars.next() {
        match c {
            '-' => out.push('_'),
            ']' => return None,
            '[' => {
                out.push('[');
                loop {
                    match chars.next()? {
                        ']' => {
                            out.push(']');
                            break;
                        }
                        c => out.push(c),
                    }
                }
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks `key` up the way libkmod's `index_search` does (exact keys).
    fn search(index: &[u8], key: &str) -> Option<Vec<String>> {
        let be = |o: usize| u32::from_be_bytes(index[o..o + 4].try_into().unwrap());
        assert_eq!(be(0), MAGIC);
        let mut node = be(8);
        let key = key.as_bytes();
        let mut i = 0;
        loop {
            let mut at = (node & NODE_MASK) as usize;
            if node & NODE_PREFIX != 0 {
                let end = at + index[at..].iter().position(|&c| c == 0).unwrap();
                let prefix = &index[at..end];
                if key.get(i..i + prefix.len()) != Some(prefix) {
                    return None;
                }
                i += prefix.len();
                at = end + 1;
            }
            let (mut first, mut last) = (128u8, 0u8);
            let children_at = at + 2;
            if node & NODE_CHILDS != 0 {
                (first, last) = (index[at], index[at + 1]);
                at += 2 + 4 * (last as usize - first as usize + 1);
            }
            if i == key.len() {
                if node & NODE_VALUES == 0 {
                    return None;
                }
                let count = be(at) as usize;
                at += 4;
                let mut values = Vec::new();
                for _ in 0..count {
                    at += 4;
                    let end = at + index[at..].iter().position(|&c| c == 0).unwrap();
                    values.push(String::from_utf8(index[at..end].to_vec()).unwrap());
                    at = end + 1;
                }
                return Some(values);
            }
            let c = key[i];
            if c < first || c > last {
                return None;
            }
            node = be(children_at + 4 * (c - first) as usize);
            if node == 0 {
                return None;
            }
            i += 1;
        }
    }

    #[test]
    fn every_key_is_found_with_its_values_by_priority() {
        let entries = [
            (
                "virtio_blk",
                "kernel/virtio_blk.ko.xz: kernel/virtio.ko.xz",
                3,
            ),
            ("virtio", "kernel/virtio.ko.xz:", 1),
            ("virtio_net", "kernel/virtio_net.ko.xz:", 2),
            ("v", "kernel/v.ko:", 0),
            ("of:N*T*Cbrcm,bcm2835_usb", "dwc2", 9),
            ("of:N*T*Cbrcm,bcm2835_usb", "other", 4),
        ];
        let index = write_index(entries.iter().map(|(k, v, p)| (*k, *v, *p))).unwrap();
        assert_eq!(search(&index, "virtio").unwrap(), ["kernel/virtio.ko.xz:"]);
        assert_eq!(
            search(&index, "virtio_blk").unwrap(),
            ["kernel/virtio_blk.ko.xz: kernel/virtio.ko.xz"]
        );
        assert_eq!(search(&index, "v").unwrap(), ["kernel/v.ko:"]);
        assert_eq!(
            search(&index, "of:N*T*Cbrcm,bcm2835_usb").unwrap(),
            ["other", "dwc2"]
        );
        assert_eq!(search(&index, "virt"), None);
        assert_eq!(search(&index, "virtio_blkx"), None);
        // The same entries in another order give the same bytes.
        let again = write_index(entries.iter().rev().map(|(k, v, p)| (*k, *v, *p))).unwrap();
        assert_eq!(index, again);
    }

    #[test]
    fn aliases_normalize_as_libkmod_does() {
        assert_eq!(normalize_alias("fs-ext4").unwrap(), "fs_ext4");
        assert_eq!(
            normalize_alias("pci:v*d[0-9]sv*").unwrap(),
            "pci:v*d[0-9]sv*"
        );
        assert_eq!(normalize_alias("a-[x-y]-b").unwrap(), "a_[x-y]_b");
        assert!(normalize_alias("a[b").is_none());
        assert!(normalize_alias("a]b").is_none());
    }
}
