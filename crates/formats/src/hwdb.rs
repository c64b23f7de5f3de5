//! systemd's compiled hardware database (`hwdb.bin`, the file `systemd-hwdb update`
//! writes from the `*.hwdb` sources and udev reads by modalias): a header, a radix trie of
//! the match patterns written children first, and a string table. Little-endian whatever
//! the host, so one file serves every arch. The value entries are the second version
//! (file name, line and file priority kept), as `systemd-hwdb` writes them; strings are
//! stored once each (systemd's writer also shares suffixes: its file is smaller, its
//! lookups the same).
//!
//! The sources are parsed as systemd parses them (`hwdb(7)`): a record is one or more match
//! lines at column 0, then properties indented by a space, then an empty line; `#` starts a
//! comment anywhere; a property given twice for one match keeps the later value.

use std::collections::{BTreeMap, HashMap};

const SIGNATURE: &[u8; 8] = b"KSLPHHRH";
const HEADER: u64 = 80;
const NODE: u64 = 24;
const CHILD: u64 = 16;
const VALUE: u64 = 32;

/// One source file: its path on the target (recorded with each property) and its bytes.
/// Sources are given in systemd's order (by file name); a later one's priority is higher.
pub struct Source<'a> {
    pub path: &'a str,
    pub text: &'a [u8],
}

/// A parse warning systemd would log too (the record or line is skipped, as it skips it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub line: u32,
    pub what: &'static str,
}

#[derive(Clone)]
struct Value {
    value: Vec<u8>,
    file: usize,
    line: u32,
}

/// Match pattern → key (with its leading blank, as stored) → value.
type Records = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Value>>;
/// One pattern and its properties, borrowed from [`Records`].
type Record<'a> = (&'a Vec<u8>, &'a BTreeMap<Vec<u8>, Value>);

/// Compiles `sources` into `hwdb.bin`'s bytes; `tool_version` is the header's record of the
/// systemd version that would have written it. Returns the warnings systemd would print.
pub fn compile(sources: &[Source], tool_version: u64) -> (Vec<u8>, Vec<Warning>) {
    let mut records = Records::new();
    let mut warnings = Vec::new();
    for (file, source) in sources.iter().enumerate() {
        parse(source, file, &mut records, &mut warnings);
    }
    let sorted: Vec<_> = records.iter().collect();
    let root = Node::build(&sorted, 0, true);
    let mut out = Writer::default();
    out.strings.push(0);
    for s in sources {
        out.string(s.path.as_bytes());
    }
    let nodes_size = root.size();
    let mut nodes = Vec::with_capacity(nodes_size as usize);
    let strings_at = HEADER + nodes_size;
    let root_at = out.write(&root, &mut nodes, strings_at, sources);
    let mut bytes = Vec::with_capacity((strings_at as usize) + out.strings.len());
    bytes.extend_from_slice(SIGNATURE);
    for field in [
        tool_version,
        strings_at + out.strings.len() as u64,
        HEADER,
        NODE,
        CHILD,
        VALUE,
        root_at,
        nodes_size,
        out.strings.len() as u64,
    ] {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    bytes.extend_from_slice(&nodes);
    bytes.extend_from_slice(&out.strings);
    (bytes, warnings)
}

/// Lines as systemd's `read_line()` ends them: at `\n`, `\r`, `\r\n` or NUL.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|b| matches!(b, b'\n' | b'\r' | 0))
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = match (rest.get(end), rest.get(end + 1)) {
            (Some(b'\r'), Some(b'\n')) => 2,
            (Some(_), _) => 1,
            (None, _) => 0,
        };
        rest = &rest[end + skip..];
        Some(line)
    })
}

fn parse(source: &Source, file: usize, records: &mut Records, warnings: &mut Vec<Warning>) {
    enum State {
        None,
        Match,
        Data,
    }
    let mut state = State::None;
    let mut matches: Vec<Vec<u8>> = Vec::new();
    let mut number = 0u32;
    let mut warn = |line: u32, what: &'static str| {
        warnings.push(Warning {
            path: source.path.to_string(),
            line,
            what,
        })
    };
    for raw in lines(source.text) {
        number += 1;
        if raw.first() == Some(&b'#') {
            continue;
        }
        let mut line = raw.split(|b| *b == b'#').next().unwrap_or_default();
        while let [rest @ .., last] = line {
            if !last.is_ascii_whitespace() && *last != 0x0b {
                break;
            }
            line = rest;
        }
        let empty = line.is_empty();
        let indented = line.first() == Some(&b' ');
        match state {
            State::None if empty => {}
            State::None if indented => warn(number, "a property where a match was expected"),
            State::None => {
                state = State::Match;
                matches.push(line.to_vec());
            }
            State::Match if empty => {
                warn(number, "a record with no properties");
                state = State::None;
                matches.clear();
            }
            State::Match if !indented => matches.push(line.to_vec()),
            State::Data if empty => {
                state = State::None;
                matches.clear();
            }
            State::Data if !indented => {
                warn(
                    number,
                    "a match where a property or an empty line was expected",
                );
                state = State::None;
                matches.clear();
            }
            State::Match | State::Data => {
                state = State::Data;
                property(line, &matches, file, number, records, &mut warn);
            }
        }
    }
    if let State::Match = state {
        warn(number, "a record with no properties");
    }
}

fn property(
    line: &[u8],
    matches: &[Vec<u8>],
    file: usize,
    number: u32,
    records: &mut Records,
    warn: &mut impl FnMut(u32, &'static str),
) {
    let Some(eq) = line.iter().position(|b| *b == b'=') else {
        warn(number, "a property with no '='");
        return;
    };
    let (mut key, value) = (&line[..eq], &line[eq + 1..]);
    // Leading blanks become one: the key keeps it (readers skip keys without it).
    while key.len() >= 2 && matches!(key[1], b' ' | b'\t') {
        key = &key[1..];
    }
    if key.len() <= 1 {
        warn(number, "a property with an empty key");
        return;
    }
    for m in matches {
        records.entry(m.clone()).or_default().insert(
            key.to_vec(),
            Value {
                value: value.to_vec(),
                file,
                line: number,
            },
        );
    }
}

/// A trie node: the bytes every pattern under it shares past the byte that led here, the
/// properties of the pattern that ends here, and the children by their next byte.
struct Node<'a> {
    prefix: &'a [u8],
    values: Option<&'a BTreeMap<Vec<u8>, Value>>,
    children: Vec<(u8, Node<'a>)>,
}

impl<'a> Node<'a> {
    /// The node for `records` (sorted, sharing their first `start` bytes). The root's
    /// prefix is empty, as systemd's is.
    fn build(records: &[Record<'a>], start: usize, root: bool) -> Self {
        let Some((first, _)) = records.first() else {
            return Node {
                prefix: &[],
                values: None,
                children: Vec::new(),
            };
        };
        let first = &first[start..];
        let shared = if root {
            0
        } else {
            records[1..].iter().fold(first.len(), |n, (m, _)| {
                n.min(
                    m[start..]
                        .iter()
                        .zip(first)
                        .take_while(|(a, b)| a == b)
                        .count(),
                )
            })
        };
        let end = start + shared;
        let (values, rest) = match records.split_first() {
            Some((r, rest)) if r.0.len() == end => (Some(r.1), rest),
            _ => (None, records),
        };
        let mut children = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            let c = rest[i].0[end];
            let n = rest[i..].iter().take_while(|(m, _)| m[end] == c).count();
            children.push((c, Node::build(&rest[i..i + n], end + 1, false)));
            i += n;
        }
        Node {
            prefix: &records[0].0[start..end],
            values,
            children,
        }
    }

    fn size(&self) -> u64 {
        let own = NODE
            + CHILD * self.children.len() as u64
            + VALUE * self.values.map_or(0, |v| v.len() as u64);
        own + self.children.iter().map(|(_, c)| c.size()).sum::<u64>()
    }
}

#[derive(Default)]
struct Writer {
    strings: Vec<u8>,
    offsets: HashMap<Vec<u8>, u64>,
}

impl Writer {
    /// The offset of `s` (NUL-terminated) in the string table, added once.
    fn string(&mut self, s: &[u8]) -> u64 {
        if s.is_empty() {
            return 0;
        }
        if let Some(at) = self.offsets.get(s) {
            return *at;
        }
        let at = self.strings.len() as u64;
        self.strings.extend_from_slice(s);
        self.strings.push(0);
        self.offsets.insert(s.to_vec(), at);
        at
    }

    /// Writes `node` after its children (post-order, as systemd does); returns its offset.
    fn write(
        &mut self,
        node: &Node,
        out: &mut Vec<u8>,
        strings_at: u64,
        sources: &[Source],
    ) -> u64 {
        let children: Vec<(u8, u64)> = node
            .children
            .iter()
            .map(|(c, child)| (*c, self.write(child, out, strings_at, sources)))
            .collect();
        let at = HEADER + out.len() as u64;
        let prefix = strings_at + self.string(node.prefix);
        out.extend_from_slice(&prefix.to_le_bytes());
        out.push(u8::try_from(children.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&[0; 7]);
        let values = node.values.map_or(0, |v| v.len());
        out.extend_from_slice(&(values as u64).to_le_bytes());
        for (c, child) in children {
            out.push(c);
            out.extend_from_slice(&[0; 7]);
            out.extend_from_slice(&child.to_le_bytes());
        }
        for (key, v) in node.values.into_iter().flatten() {
            let key = strings_at + self.string(key);
            let value = strings_at + self.string(&v.value);
            let file = strings_at + self.string(sources[v.file].path.as_bytes());
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
            out.extend_from_slice(&file.to_le_bytes());
            out.extend_from_slice(&v.line.to_le_bytes());
            // File priorities count from 1 in source order.
            let priority = u16::try_from(v.file + 1).unwrap_or(u16::MAX);
            out.extend_from_slice(&priority.to_le_bytes());
            out.extend_from_slice(&[0; 2]);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(b: &[u8], at: u64) -> u64 {
        let at = at as usize;
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn cstr(b: &[u8], at: u64) -> &[u8] {
        let s = &b[at as usize..];
        &s[..s.iter().position(|c| *c == 0).unwrap()]
    }

    /// Reads the file back the way sd-hwdb walks it, for exact patterns (no globs).
    fn lookup(b: &[u8], search: &[u8]) -> Vec<(String, String)> {
        let mut node = u64_at(b, 56);
        let mut i = 0;
        loop {
            let prefix = cstr(b, u64_at(b, node));
            if !search[i..].starts_with(prefix) {
                return Vec::new();
            }
            i += prefix.len();
            let children = b[node as usize + 8] as u64;
            let values = u64_at(b, node + 16);
            if i == search.len() {
                let base = node + NODE + CHILD * children;
                return (0..values)
                    .map(|n| {
                        let e = base + VALUE * n;
                        let k = String::from_utf8(cstr(b, u64_at(b, e)).to_vec()).unwrap();
                        let v = String::from_utf8(cstr(b, u64_at(b, e + 8)).to_vec()).unwrap();
                        (k, v)
                    })
                    .collect();
            }
            let next = (0..children)
                .map(|n| node + NODE + CHILD * n)
                .find(|e| b[*e as usize] == search[i]);
            match next {
                Some(e) => node = u64_at(b, e + 8),
                None => return Vec::new(),
            }
            i += 1;
        }
    }

    #[test]
    fn records_are_found_by_their_patterns_with_the_later_value_kept() {
        let a = b"# a comment\nusb:v1D6B*\n ID_VENDOR_FROM_DATABASE=Linux Foundation\n\nusb:v1D6Bp0002*\nusb:v1D6Bp0003*\n  ID_MODEL_FROM_DATABASE=root hub # a trailing comment\n\n";
        let b = b"usb:v1D6Bp0002*\r\n ID_MODEL_FROM_DATABASE=2.0 root hub\r\n KEY_WITHOUT_EQ\n";
        let (bin, warnings) = compile(
            &[
                Source {
                    path: "/usr/lib/udev/hwdb.d/20-a.hwdb",
                    text: a,
                },
                Source {
                    path: "/usr/lib/udev/hwdb.d/30-b.hwdb",
                    text: b,
                },
            ],
            257,
        );
        assert_eq!(&bin[..8], SIGNATURE);
        assert_eq!(u64_at(&bin, 8), 257);
        assert_eq!(
            u64_at(&bin, 16),
            bin.len() as u64,
            "the size the reader checks"
        );
        assert_eq!(
            lookup(&bin, b"usb:v1D6Bp0002*"),
            [(" ID_MODEL_FROM_DATABASE".into(), "2.0 root hub".into())]
        );
        assert_eq!(
            lookup(&bin, b"usb:v1D6Bp0003*"),
            [(" ID_MODEL_FROM_DATABASE".into(), "root hub".into())]
        );
        assert_eq!(
            lookup(&bin, b"usb:v1D6B*"),
            [(" ID_VENDOR_FROM_DATABASE".into(), "Linux Foundation".into())]
        );
        assert!(lookup(&bin, b"usb:v1D6B").is_empty());
        assert_eq!(
            warnings,
            [Warning {
                path: "/usr/lib/udev/hwdb.d/30-b.hwdb".into(),
                line: 3,
                what: "a property with no '='"
            }]
        );
    }

    #[test]
    fn the_same_sources_give_the_same_bytes_and_none_give_an_empty_trie() {
        let text = b"a*\n X=1\n\nab*\n Y=2\n";
        let one = compile(
            &[Source {
                path: "/x.hwdb",
                text,
            }],
            257,
        )
        .0;
        assert_eq!(
            one,
            compile(
                &[Source {
                    path: "/x.hwdb",
                    text
                }],
                257
            )
            .0
        );
        let empty = compile(&[], 257).0;
        assert_eq!(empty.len() as u64, HEADER + NODE + 1);
        assert!(lookup(&empty, b"a").is_empty());
    }
}
