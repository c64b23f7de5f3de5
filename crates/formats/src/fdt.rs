//! Flattened device trees (DTB): removing properties in place, as libfdt's
//! `fdt_nop_property` does. The property's words become `FDT_NOP` tokens, so nothing moves
//! and every offset in the blob stays valid; the kernel skips them.

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Removes the properties `(node name, property name)` (a node by its name with unit
/// address, such as `mmc@7e300000`, anywhere in the tree) and returns how many were
/// removed; an error for a blob that is not a device tree.
pub fn remove_properties(dtb: &mut [u8], remove: &[(&str, &str)]) -> Result<usize, String> {
    if be32(dtb, 0) != Some(MAGIC) {
        return Err("not a flattened device tree (no d00dfeed magic)".into());
    }
    let field = |i: usize| {
        be32(dtb, 4 * i)
            .map(|v| v as usize)
            .ok_or("a truncated header")
    };
    let (struct_at, strings_at) = (field(2)?, field(3)?);
    let struct_size = field(9)?;
    let end = struct_at
        .checked_add(struct_size)
        .filter(|e| *e <= dtb.len())
        .ok_or("the structure block runs past the end")?;
    let string = |dtb: &[u8], off: usize| -> Option<String> {
        let rest = dtb.get(strings_at + off..)?;
        let n = rest.iter().position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&rest[..n]).into_owned())
    };
    let mut path: Vec<String> = Vec::new();
    let mut at = struct_at;
    let mut removed = 0;
    while at + 4 <= end {
        let token = be32(dtb, at).ok_or("a truncated token")?;
        match token {
            BEGIN_NODE => {
                let rest = &dtb[at + 4..end];
                let n = rest
                    .iter()
                    .position(|&c| c == 0)
                    .ok_or("a node name runs past the end")?;
                path.push(String::from_utf8_lossy(&rest[..n]).into_owned());
                at += 4 + (n + 1).div_ceil(4) * 4;
            }
            END_NODE => {
                path.pop().ok_or("more node ends than beginnings")?;
                at += 4;
            }
            PROP => {
                let len = be32(dtb, at + 4).ok_or("a truncated property")? as usize;
                let name_off = be32(dtb, at + 8).ok_or("a truncated property")? as usize;
                let next = at + 12 + len.div_ceil(4) * 4;
                if next > end {
                    return Err("a property runs past the end".into());
                }
                let node = path.last().map(String::as_str).unwrap_or("");
                let name =
                    string(dtb, name_off).ok_or("a property name outside the strings block")?;
                if remove.iter().any(|(n, p)| *n == node && *p == name) {
                    for w in (at..next).step_by(4) {
                        dtb[w..w + 4].copy_from_slice(&NOP.to_be_bytes());
                    }
                    removed += 1;
                }
                at = next;
            }
            NOP => at += 4,
            END => break,
            other => return Err(format!("unknown token {other:#x} at byte {at}")),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device tree `/ { soc { mmc@1 { a = <1>; bb = "x"; }; }; }` built by hand.
    fn tree() -> Vec<u8> {
        let strings = b"a\0bb\0";
        let mut s: Vec<u8> = Vec::new();
        let word = |s: &mut Vec<u8>, w: u32| s.extend(w.to_be_bytes());
        let name = |s: &mut Vec<u8>, n: &[u8]| {
            s.extend(n);
            s.push(0);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        word(&mut s, BEGIN_NODE);
        name(&mut s, b"");
        word(&mut s, BEGIN_NODE);
        name(&mut s, b"soc");
        word(&mut s, BEGIN_NODE);
        name(&mut s, b"mmc@1");
        for w in [PROP, 4, 0, 1] {
            word(&mut s, w);
        }
        word(&mut s, PROP);
        word(&mut s, 2);
        word(&mut s, 2);
        name(&mut s, b"x");
        for w in [END_NODE, END_NODE, END_NODE, END] {
            word(&mut s, w);
        }
        let mut out = Vec::new();
        let header = [
            MAGIC,
            0,
            40,
            (40 + s.len()) as u32,
            40,
            17,
            16,
            0,
            strings.len() as u32,
            s.len() as u32,
        ];
        for h in header {
            out.extend(h.to_be_bytes());
        }
        out.extend(&s);
        out.extend(strings);
        let total = out.len() as u32;
        out[4..8].copy_from_slice(&total.to_be_bytes());
        out
    }

    #[test]
    fn removes_only_the_named_property_of_the_named_node() {
        let mut dtb = tree();
        let before = dtb.clone();
        assert_eq!(
            remove_properties(&mut dtb, &[("soc", "bb"), ("mmc@1", "zz")]).unwrap(),
            0
        );
        assert_eq!(dtb, before);
        assert_eq!(remove_properties(&mut dtb, &[("mmc@1", "bb")]).unwrap(), 1);
        assert_eq!(dtb.len(), before.len());
        // The `a` property is intact, and the removed one is all NOPs.
        let nops = |d: &[u8]| d.chunks(4).filter(|c| *c == NOP.to_be_bytes()).count();
        assert_eq!(nops(&dtb), nops(&before) + 4);
        assert_eq!(dtb[..60], before[..60]);
        assert_eq!(remove_properties(&mut dtb, &[("mmc@1", "a")]).unwrap(), 1);
        assert!(remove_properties(&mut b"not a tree".to_vec(), &[]).is_err());
        let mut cut = tree();
        cut.truncate(60);
        assert!(remove_properties(&mut cut, &[("mmc@1", "a")]).is_err());
    }
}
