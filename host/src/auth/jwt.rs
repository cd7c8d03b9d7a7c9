//! Access tokens: HS256 JWTs signed and verified only here.
//!
//! The algorithm is pinned (a token naming any other, `none` included, is
//! refused), the key is chosen by `kid` (rotation: sign with the newest,
//! accept the listed older ones), and `iss`, `aud`, `exp` and `nbf` are
//! checked with a few seconds' leeway for clock skew between hosts.
//!
//! A token that verified is remembered until it expires: the next request
//! with the very same token skips the signature and the JSON (about 4 us
//! of a `POST /v1/sql`). The keys never change while a host runs, so the
//! verdict cannot change either, except by expiry, which is checked again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// Clock skew tolerated between hosts, in seconds.
const LEEWAY_SECS: u64 = 5;

/// Verified tokens remembered at most (forgotten all at once beyond).
const MAX_REMEMBERED: usize = 10_000;

/// The claims of a Zatabase access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The session.
    pub sid: String,
    pub org: String,
    /// The project.
    pub prj: String,
    /// `live` or `sandbox`.
    pub env: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iss: String,
    pub aud: String,
    /// Unique per token, so two tokens of one session in one second differ.
    #[serde(default)]
    pub jti: String,
}

/// Signing and verification keys.
pub struct Keys {
    signing_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    /// Tokens that verified, by their exact text.
    verified: Mutex<HashMap<String, Claims>>,
}

impl Keys {
    /// `keys` maps each accepted `kid` to its secret; `signing_kid` must be
    /// one of them.
    pub fn new(
        signing_kid: &str,
        keys: &HashMap<String, Vec<u8>>,
        issuer: &str,
        audience: &str,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            signing_kid: signing_kid.to_owned(),
            encoding: EncodingKey::from_secret(&keys[signing_kid]),
            decoding: keys
                .iter()
                .map(|(kid, secret)| (kid.clone(), DecodingKey::from_secret(secret)))
                .collect(),
            validation,
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("HS256 signing cannot fail")
    }

    /// Whether `token` names one of these keys (whether or not it verifies):
    /// a token that claims to be the platform's.
    pub fn names_ours(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|header| header.kid)
            .is_some_and(|kid| self.decoding.contains_key(&kid))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(verdict) = self.remembered(token, now) {
            return verdict;
        }
        let claims = self.verify_signed(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// The verdict on a token verified before, as of `now` (Unix seconds).
    fn remembered(&self, token: &str, now: u64) -> Option<Result<Claims, AuthError>> {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let claims = verified.get(token)?;
        // As `verify_signed` decides: expired once `exp` is behind by more
        // than the leeway. (`nbf` was passed when it verified.)
        if claims.exp.saturating_add(LEEWAY_SECS) < now {
            verified.remove(token);
            return Some(Err(AuthError::Expired));
        }
        Some(Ok(claims.clone()))
    }

    /// Checks the signature and the claims.
    fn verify_signed(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Invalid("unsupported token algorithm"));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(AuthError::Invalid("unknown signing key"))?;
        match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("token not valid yet")
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    AuthError::Invalid("bad token signature")
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    AuthError::Invalid("token for another audience")
                }
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    AuthError::Invalid("token from another issuer")
                }
                _ => AuthError::Malformed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(kid: &str, secret: &[u8]) -> Keys {
        let map = HashMap::from([(kid.to_owned(), secret.to_vec())]);
        Keys::new(kid, &map, "zatabase", "zatabase-api")
    }

    fn claims(exp_offset: i64) -> Claims {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Claims {
            sub: "u".into(),
            sid: "s".into(),
            org: "o".into(),
            prj: "p".into(),
            env: "sandbox".into(),
            iat: now as u64,
            exp: (now + exp_offset) as u64,
            nbf: None,
            iss: "zatabase".into(),
            aud: "zatabase-api".into(),
            jti: "j".into(),
        }
    }

    #[test]
    fn round_trips_and_refuses_other_keys_and_expiry() {
        let ours = keys("k1", b"0123456789abcdef0123456789abcdef");
        let token = ours.sign(&claims(60));
        assert_eq!(ours.verify(&token).unwrap().sid, "s");
        let theirs = keys("k1", b"another key, another key, another");
        assert!(matches!(theirs.verify(&token), Err(AuthError::Invalid(_))));
        let expired = ours.sign(&claims(-60));
        assert!(matches!(ours.verify(&expired), Err(AuthError::Expired)));
        assert!(matches!(ours.verify("garbage"), Err(AuthError::Malformed)));
    }

    #[test]
    fn a_token_naming_a_key_of_ours_is_ours_verified_or_not() {
        let ours = keys("k1", b"0123456789abcdef0123456789abcdef");
        assert!(ours.names_ours(&ours.sign(&claims(60))));
        assert!(ours.names_ours(&ours.sign(&claims(-60))));
        // Our kid, another secret: a forgery of ours, still ours to refuse.
        let forged = keys("k1", b"another key, another key, another").sign(&claims(60));
        assert!(ours.names_ours(&forged));
        let elsewhere = keys("auth0", b"0123456789abcdef0123456789abcdef").sign(&claims(60));
        assert!(!ours.names_ours(&elsewhere));
        assert!(!ours.names_ours("garbage"));
    }

    #[test]
    fn rotation_accepts_older_kids() {
        let old = HashMap::from([(
            "k1".to_owned(),
            b"k1-secret-k1-secret-k1-secret-k1".to_vec(),
        )]);
        let old_keys = Keys::new("k1", &old, "zatabase", "zatabase-api");
        let token = old_keys.sign(&claims(60));
        let mut both = old.clone();
        both.insert(
            "k2".to_owned(),
            b"k2-secret-k2-secret-k2-secret-k2".to_vec(),
        );
        let rotated = Keys::new("k2", &both, "zatabase", "zatabase-api");
        assert!(rotated.verify(&token).is_ok());
        let only_new = HashMap::from([("k2".to_owned(), both["k2"].clone())]);
        let retired = Keys::new("k2", &only_new, "zatabase", "zatabase-api");
        assert!(retired.verify(&token).is_err());
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_changed_one_is_checked() {
        let ours = keys("k1", b"0123456789abcdef0123456789abcdef");
        let fresh = claims(60);
        let token = ours.sign(&fresh);
        assert_eq!(ours.verify(&token).unwrap(), fresh);
        // Now remembered: the same answer without the signature.
        assert_eq!(ours.remembered(&token, fresh.iat), Some(Ok(fresh.clone())));
        assert_eq!(ours.verify(&token).unwrap(), fresh);
        // Within the leeway after `exp` it still holds; beyond, it expired.
        let at_edge = fresh.exp + LEEWAY_SECS;
        assert!(matches!(ours.remembered(&token, at_edge), Some(Ok(_))));
        assert!(matches!(
            ours.remembered(&token, at_edge + 1),
            Some(Err(AuthError::Expired))
        ));
        assert_eq!(
            ours.remembered(&token, fresh.iat),
            None,
            "forgotten once expired"
        );
        // A token differing from a remembered one is verified on its own.
        let (head, rest) = token.split_once('.').unwrap();
        let tampered = format!("{head}.f{}", &rest[1..]);
        ours.verify(&token).unwrap();
        assert!(ours.verify(&tampered).is_err());
    }
}
