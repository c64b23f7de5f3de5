//! Canonical JSON: object keys sorted, no insignificant whitespace.
//!
//! Everything Cairn hashes as JSON goes through [`to_canonical_vec`]: serialising via
//! `serde_json::Value` sorts keys (serde_json's map is a BTreeMap; the `preserve_order`
//! feature must never be enabled, which the test below would catch), and turns the
//! HashMaps inside oci-spec's types into sorted maps.

use serde::Serialize;

pub fn to_canonical_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let value = serde_json::to_value(value)?;
    serde_json::to_vec(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_are_sorted_whatever_the_map() {
        let mut m = HashMap::new();
        for k in ["zeta", "alpha", "mu", "beta", "omega", "gamma"] {
            m.insert(k.to_string(), 1);
        }
        let out = String::from_utf8(to_canonical_vec(&m).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"alpha":1,"beta":1,"gamma":1,"mu":1,"omega":1,"zeta":1}"#
        );
    }
}
