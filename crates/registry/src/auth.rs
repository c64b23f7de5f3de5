//! `WWW-Authenticate` challenges (RFC 7235, as registries send them) and the tokens of the
//! distribution token spec, cached per scope until they expire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One challenge: its scheme (`Bearer`, `Basic`) and parameters (`realm`, `service`,
/// `scope`, `error`), parameter names lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }
    pub fn is_basic(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("basic")
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges:
/// `Bearer realm="https://h/service/token",service="harbor-registry",scope="repository:a/b:pull,push", Basic realm="x"`.
/// Quoted values may contain commas and escaped quotes.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut s = header.trim();
    while !s.is_empty() {
        // A token: either a new scheme (followed by space or end) or a parameter name.
        let end = s
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(s.len());
        let word = &s[..end];
        let rest = s[end..].trim_start();
        if let Some(after_eq) = rest.strip_prefix('=') {
            // A parameter of the current challenge.
            let after_eq = after_eq.trim_start();
            let (value, remaining) = if let Some(q) = after_eq.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &q[end.min(q.len())..])
            } else {
                let stop = after_eq.find(',').unwrap_or(after_eq.len());
                (after_eq[..stop].trim().to_string(), &after_eq[stop..])
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
            s = remaining.trim_start().trim_start_matches(',').trim_start();
        } else if !word.is_empty() {
            out.push(Challenge {
                scheme: word.to_string(),
                params: BTreeMap::new(),
            });
            s = rest.trim_start_matches(',').trim_start();
        } else {
            s = rest.trim_start_matches(',').trim_start();
        }
    }
    out
}

/// Bearer tokens by scope, each valid until shortly before it expires.
#[derive(Debug, Default)]
pub struct TokenCache {
    /// Token and the moment to stop using it (its expiry less a margin).
    tokens: BTreeMap<String, (String, Instant)>,
}

/// Tokens are renewed this long before the registry would refuse them.
const MARGIN: Duration = Duration::from_secs(30);

impl TokenCache {
    pub fn get(&self, scope: &str) -> Option<&str> {
        self.tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.as_str())
    }

    /// Stores a token; `expires_in` defaults to 60 s as the token spec says.
    pub fn put(&mut self, scope: &str, token: String, expires_in: Option<u64>) {
        let life = Duration::from_secs(expires_in.unwrap_or(60).max(1));
        // Renew shortly before expiry: 30 s early, or at half-life for short tokens.
        let margin = MARGIN.min(life / 2);
        self.tokens
            .insert(scope.to_string(), (token, Instant::now() + life - margin));
    }

    pub fn has(&self, scope: &str) -> bool {
        self.get(scope).is_some()
    }

    pub fn forget(&mut self, scope: &str) {
        self.tokens.remove(scope);
    }
}

/// The token and its lifetime from a token server's JSON answer (`token` or
/// `access_token`, `expires_in`).
pub fn parse_token_response(body: &[u8]) -> Option<(String, Option<u64>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = v["token"]
        .as_str()
        .or_else(|| v["access_token"].as_str())?
        .to_string();
    Some((token, v["expires_in"].as_u64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harbor_and_distribution_challenges_parse() {
        let c = parse_challenges(
            r#"Bearer realm="https://harbor.lan/service/token",service="harbor-registry",scope="repository:homelab/haproxy:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(
            c[0].param("realm"),
            Some("https://harbor.lan/service/token")
        );
        assert_eq!(c[0].param("service"), Some("harbor-registry"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:homelab/haproxy:pull,push")
        );

        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert!(c[0].is_basic());
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));

        let c = parse_challenges(
            r#"Bearer realm="https://a/t", error="insufficient_scope", scope="repository:x:pull repository:y:pull", Basic realm="b\"q""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:x:pull repository:y:pull")
        );
        assert_eq!(c[1].param("realm"), Some("b\"q"));
        let c = parse_challenges("Bearer realm=https://a/t,service=reg");
        assert_eq!(c[0].param("realm"), Some("https://a/t"));
        assert_eq!(c[0].param("service"), Some("reg"));
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn tokens_expire_and_parse() {
        let mut cache = TokenCache::default();
        cache.put("s", "t".into(), Some(3600));
        assert_eq!(cache.get("s"), Some("t"));
        cache.put("short", "u".into(), Some(10));
        assert_eq!(
            cache.get("short"),
            Some("u"),
            "short tokens are used until half-life"
        );
        cache.put("gone", "v".into(), Some(1));
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(cache.get("gone"), None, "past half-life");
        assert_eq!(
            parse_token_response(br#"{"token":"a","expires_in":1800}"#),
            Some(("a".into(), Some(1800)))
        );
        assert_eq!(
            parse_token_response(br#"{"access_token":"b"}"#),
            Some(("b".into(), None))
        );
        assert_eq!(parse_token_response(b"{}"), None);
    }
}
