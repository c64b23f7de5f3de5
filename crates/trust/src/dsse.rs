//! DSSE envelopes (the signed wrapper of in-toto attestations, as cosign writes them in
//! `.att` tags): the signature covers the pre-authentication encoding
//! `DSSEv1 <len(type)> <type> <len(body)> <body>`, never the base64.

use crate::TrustError;
use crate::keys::{PublicKey, SigningKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The media type of a DSSE envelope as a layer.
pub use cairn_oci::media::DSSE_ENVELOPE as ENVELOPE_MEDIA;
/// The payload type of an in-toto statement.
pub use cairn_oci::media::IN_TOTO;

/// The pre-authentication encoding of `body` of type `payload_type`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// An envelope around `statement` (an in-toto statement's JSON), signed with `key`.
pub fn envelope(key: &SigningKey, statement: &[u8]) -> Vec<u8> {
    let sig = key.sign(&pae(IN_TOTO, statement));
    let doc = serde_json::json!({
        "payloadType": IN_TOTO,
        "payload": B64.encode(statement),
        "signatures": [{"keyid": "", "sig": B64.encode(sig)}],
    });
    serde_json::to_vec(&doc).expect("json")
}

/// The statement inside `envelope` when one of its signatures is `key`'s.
pub fn open(envelope: &[u8], key: &PublicKey) -> Result<Vec<u8>, TrustError> {
    let doc: serde_json::Value = serde_json::from_slice(envelope)
        .map_err(|_| TrustError("the attestation is not a DSSE envelope (not JSON)".into()))?;
    let payload_type = doc["payloadType"].as_str().unwrap_or_default();
    if payload_type != IN_TOTO {
        return Err(TrustError(format!(
            "the attestation's payload type is {payload_type:?}, not {IN_TOTO}"
        )));
    }
    let body = doc["payload"]
        .as_str()
        .and_then(|p| B64.decode(p).ok())
        .ok_or_else(|| TrustError("the attestation's payload is not base64".into()))?;
    let message = pae(payload_type, &body);
    let signed = doc["signatures"].as_array().into_iter().flatten().any(|s| {
        s["sig"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .is_some_and(|sig| key.verify(&message, &sig))
    });
    if !signed {
        return Err(TrustError(format!(
            "the attestation is not signed by key {}",
            key.id()
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_sign_the_pae_and_open_only_with_the_key() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        let key = SigningKey::generate().unwrap();
        let env = envelope(&key, br#"{"_type":"x"}"#);
        assert_eq!(open(&env, &key.public()).unwrap(), br#"{"_type":"x"}"#);
        let other = SigningKey::generate().unwrap().public();
        assert!(open(&env, &other).unwrap_err().0.contains("not signed by"));
        let tampered = String::from_utf8(env).unwrap().replace(
            &B64.encode(br#"{"_type":"x"}"#),
            &B64.encode(br#"{"_type":"y"}"#),
        );
        assert!(open(tampered.as_bytes(), &key.public()).is_err());
    }
}
