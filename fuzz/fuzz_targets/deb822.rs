//! deb822 text as a mirror serves it: control paragraphs, a Packages index with its
//! relation fields, and dpkg version ordering.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cmp::Ordering;

fuzz_target!(|text: &str| {
    for p in cairn_debian::control::paragraphs(text) {
        for (name, _) in &p.fields {
            let _ = p.get(name);
        }
    }
    let mut index = cairn_debian::PackageIndex::default();
    let _ = index.add(text, "fuzz");
    let _ = cairn_debian::packages::parse_relations(text);
    // dpkg's order is a total order: antisymmetric and reflexive on any two strings.
    let (a, b) = text.split_at(
        text.char_indices()
            .nth(text.chars().count() / 2)
            .map_or(0, |(i, _)| i),
    );
    let ab = cairn_debian::version::compare(a, b);
    assert_eq!(
        ab.reverse(),
        cairn_debian::version::compare(b, a),
        "{a:?} {b:?}"
    );
    assert_eq!(
        cairn_debian::version::compare(a, a),
        Ordering::Equal,
        "{a:?}"
    );
});
