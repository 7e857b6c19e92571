//! Sender authentication, as Prometheus' remote_write sends it: `authorization` (a bearer
//! token) or `basic_auth`. The expected `Authorization` header is made once at start; each
//! request's header is compared in constant time.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// How senders prove who they are (`[remote_write.auth]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SenderAuth {
    /// `Authorization: Bearer <token>` (Prometheus: `authorization: { credentials: ... }`).
    BearerToken(String),
    /// `Authorization: Basic ...` (Prometheus: `basic_auth: { username, password }`).
    Basic { username: String, password: String },
}

impl SenderAuth {
    /// The whole `Authorization` header a sender must send.
    pub fn expected_header(&self) -> String {
        match self {
            SenderAuth::BearerToken(t) => format!("Bearer {t}"),
            SenderAuth::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
        }
    }
}

/// Whether a request's `Authorization` header lets it in: `Err(true)` when it sent none
/// (401, with a challenge), `Err(false)` when it sent the wrong one (403).
pub fn check(expected: Option<&str>, got: Option<&str>) -> Result<(), bool> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match got {
        None => Err(true),
        Some(g) if crate::web::same(g.trim().as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_headers_as_prometheus_sends_them() {
        let b = SenderAuth::BearerToken("s3cret".into());
        assert_eq!(b.expected_header(), "Bearer s3cret");
        // RFC 7617's example: Aladdin / open sesame.
        let basic = SenderAuth::Basic {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(
            basic.expected_header(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        let cfg: SenderAuth =
            toml::from_str("basic = { username = \"u\", password = \"p\" }").unwrap();
        assert_eq!(cfg.expected_header(), "Basic dTpw");
    }

    #[test]
    fn the_header_must_match_exactly() {
        assert_eq!(check(None, None), Ok(()));
        let want = Some("Bearer t");
        assert_eq!(check(want, Some("Bearer t")), Ok(()));
        assert_eq!(check(want, None), Err(true));
        assert_eq!(check(want, Some("Bearer x")), Err(false));
        assert_eq!(check(want, Some("Basic dTpw")), Err(false));
    }
}
