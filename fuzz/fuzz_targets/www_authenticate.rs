//! What a registry answers to authentication: `WWW-Authenticate` challenges and the token
//! server's JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = std::str::from_utf8(data) {
        for c in cairn_registry::auth::parse_challenges(header) {
            let _ = c.param("realm");
            let _ = c.param("scope");
        }
    }
    let _ = cairn_registry::auth::parse_token_response(data);
});
