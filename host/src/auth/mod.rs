//! Authentication: the host verifies every bearer token and checks that its
//! session is live before a route group sees the request; the route group
//! gets a principal through the `session` capability, never the token.
//! Signing keys and password hashing stay here too (the `auth` capability).

pub mod access;
pub mod expiry;
pub mod jwt;
pub mod password;
pub mod sessions;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use sha2::{Digest, Sha256};

use crate::caps::zatabase::platform::session::Principal;
use crate::config::AuthConfig;
use crate::db::Db;
use crate::secrets::MasterKey;
pub use access::Access;
use jwt::{Claims, Keys};
use password::Passwords;
use throttle::LoginThrottle;

/// How a refresh token starts.
const REFRESH_PREFIX: &str = "zrt_";

/// Why a request is not authenticated. Every variant answers 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <token>`, or not a JWT.
    Malformed,
    /// A JWT that does not verify.
    Invalid(&'static str),
    Expired,
    /// The token verifies but its session was logged out, revoked or ended.
    SessionEnded,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => {
                f.write_str("authentication required: send `Authorization: Bearer <access token>`")
            }
            AuthError::Malformed => f.write_str("malformed bearer token"),
            AuthError::Invalid(why) => write!(f, "invalid token: {why}"),
            AuthError::Expired => f.write_str("the access token has expired; refresh it"),
            AuthError::SessionEnded => f.write_str("the session has ended; log in again"),
        }
    }
}

/// A session as checked: live, seconds left, project, organization, whether
/// the caller administers the project, and its grants as JSON.
type SessionRow = (bool, f64, String, String, bool, String);

/// What the `auth` capability's `issue-tokens` hands back.
pub struct Tokens {
    pub access_token: String,
    pub expires_in: u32,
    pub refresh_token: String,
    pub refresh_digest: String,
    pub refresh_expires_in: u32,
}

/// The host's authenticator.
/// A session's liveness and its caller's permissions in its project: the
/// one query behind every authenticated request the session cache misses.
/// One text parameter, the session id.
/// A session lives while its user can still reach its project (as
/// `switch` requires): a revoked grant ends the sessions it let in.
pub const SESSION_QUERY: &str = "SELECT s.revoked_at IS NULL AND s.expires_at > now()
                      AND zatabase.reaches_project(s.project_id, s.user_id),
                    extract(epoch FROM s.expires_at - now())::float8,
                    s.project_id::text,
                    p.organization_id::text,
                    p.created_by = s.user_id OR coalesce(m.role IN ('owner', 'admin'), false),
                    (SELECT coalesce(jsonb_agg(jsonb_build_array(g.resource, g.resource_id, g.actions)), '[]')::text
                     FROM zatabase.permission_grants g
                     WHERE g.project_id = s.project_id
                       AND ((g.principal_type = 'user' AND g.principal_id = s.user_id::text)
                         OR (g.principal_type = 'role' AND g.principal_id = m.role)))
             FROM zatabase.sessions s
             JOIN zatabase.projects p ON p.id = s.project_id
             LEFT JOIN zatabase.organization_members m
               ON m.organization_id = p.organization_id AND m.user_id = s.user_id
             WHERE s.id = $1::uuid";

pub struct Auth {
    keys: Keys,
    passwords: Passwords,
    /// Password hashes, one a core at a time.
    hashing: crate::turns::Turns,
    pub throttle: LoginThrottle,
    pub sessions: sessions::SessionCache,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    pub refresh_reuse_interval_secs: u32,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    pub fn new(config: &AuthConfig, master: &MasterKey) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for kid in config.accepted_kids.iter().chain([&config.signing_kid]) {
            keys.insert(
                kid.clone(),
                hex::decode(master.derive(&format!("jwt-signing:{kid}")))?,
            );
        }
        if let Some(key) = &config.signing_key {
            let bytes = hex::decode(key.trim()).context("auth.signing_key must be hex")?;
            ensure!(
                bytes.len() >= 32,
                "auth.signing_key must be at least 32 bytes"
            );
            keys.insert(config.signing_kid.clone(), bytes);
        }
        Ok(Self {
            keys: Keys::new(&config.signing_kid, &keys, &config.issuer, &config.audience),
            passwords: Passwords::new(
                config.argon2_memory_kib,
                config.argon2_iterations,
                config.argon2_parallelism,
            )?,
            hashing: crate::turns::Turns::per_core(),
            throttle: LoginThrottle::new(throttle::Limits {
                per_account: config.max_failed_logins_per_account,
                per_ip: config.max_failed_logins_per_ip,
                checks_per_ip: config.max_password_checks_per_ip,
                window: Duration::from_secs(config.failed_login_window_secs),
            }),
            sessions: sessions::SessionCache::new(Duration::from_secs(config.session_cache_secs)),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_ttl: Duration::from_secs(config.access_ttl_secs),
            refresh_ttl: Duration::from_secs(config.refresh_ttl_secs),
            refresh_reuse_interval_secs: config.refresh_reuse_interval_secs,
        })
    }

    /// Whether an `Authorization` header value holds anything of the
    /// platform's own kind of credential, however it is written (any
    /// scheme or none, among other values): a token naming one of its
    /// signing keys, valid or not, or a refresh token. Anything else
    /// (Basic, an API key, another issuer's token) belongs to whoever the
    /// request is for. Text that is not UTF-8 holds none of ours.
    pub fn claims_to_be_ours(&self, header: &[u8]) -> bool {
        let Ok(header) = std::str::from_utf8(header) else {
            return false;
        };
        header
            .split(|c: char| c.is_whitespace() || c == ',')
            .any(|piece| piece.starts_with(REFRESH_PREFIX) || self.keys.names_ours(piece))
    }

    /// The principal an `Authorization` header value vouches for (signature,
    /// issuer, audience and lifetime checked; the session is not).
    pub fn verify_header(&self, header: &[u8]) -> Result<Principal, AuthError> {
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        let claims = self.keys.verify(token.trim())?;
        Ok(Principal {
            user_id: claims.sub,
            session_id: claims.sid,
            organization_id: claims.org,
            project_id: claims.prj,
            environment: claims.env,
            expires_at: claims.exp,
        })
    }

    /// What the principal may do, if its session is neither ended nor
    /// expired: from this host's recent check, else from the database (the
    /// session, the project's administrators and the caller's grants, in
    /// one query).
    pub async fn session_access(
        &self,
        db: &Db,
        principal: &Principal,
    ) -> Result<Option<Arc<Access>>, sqlx::Error> {
        if let Some(access) = self.sessions.trusted(&principal.session_id) {
            return Ok(Some(access));
        }
        let Ok(id) = uuid::Uuid::parse_str(&principal.session_id) else {
            return Ok(None);
        };
        let checked = self.sessions.generation();
        let found: Option<SessionRow> = sqlx::query_as(SESSION_QUERY)
            .bind(id.to_string())
            .fetch_optional(db.platform_pool())
            .await?;
        let Some((true, remaining, project, organization, admin, grants)) = found else {
            return Ok(None);
        };
        let grants: Vec<(String, String, Vec<String>)> =
            serde_json::from_str(&grants).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let access = Arc::new(Access::from_grants(admin, &grants));
        self.sessions.remember(
            checked,
            &principal.session_id,
            Duration::from_secs_f64(remaining.max(0.0)),
            &project,
            &organization,
            access.clone(),
        );
        Ok(Some(access))
    }

    /// A signed access token and a fresh refresh token for `claims`.
    pub fn issue(&self, user: &str, session: &str, org: &str, project: &str, env: &str) -> Tokens {
        let iat = now();
        let mut jti = [0u8; 12];
        rustix::rand::getrandom(&mut jti, rustix::rand::GetRandomFlags::empty())
            .expect("the system's random source");
        let claims = Claims {
            sub: user.to_owned(),
            sid: session.to_owned(),
            org: org.to_owned(),
            prj: project.to_owned(),
            env: env.to_owned(),
            iat,
            exp: iat + self.access_ttl.as_secs(),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: hex::encode(jti),
        };
        let mut secret = [0u8; 32];
        rustix::rand::getrandom(&mut secret, rustix::rand::GetRandomFlags::empty())
            .expect("the system's random source");
        let refresh_token = format!("{REFRESH_PREFIX}{}", hex::encode(secret));
        Tokens {
            access_token: self.keys.sign(&claims),
            expires_in: self.access_ttl.as_secs() as u32,
            refresh_digest: digest(&refresh_token),
            refresh_token,
            refresh_expires_in: self.refresh_ttl.as_secs() as u32,
        }
    }

    pub async fn hash_password(self: &Arc<Self>, password: String) -> anyhow::Result<String> {
        let this = self.clone();
        self.hashing
            .run(move || this.passwords.hash(&password))
            .await?
    }

    pub fn password_is_current(&self, hash: &str) -> bool {
        self.passwords.is_current(hash)
    }

    pub async fn verify_password(self: &Arc<Self>, password: String, hash: Option<String>) -> bool {
        let this = self.clone();
        self.hashing
            .run(move || this.passwords.verify(&password, hash.as_deref()))
            .await
            .unwrap_or(false)
    }

    pub fn login_allowed(&self, email: &str, ip: IpAddr) -> Result<(), u32> {
        self.throttle.begin(email, ip)
    }

    pub fn signup_allowed(&self, ip: IpAddr) -> Result<(), u32> {
        self.throttle.begin_signup(ip)
    }
}

/// The stored form of a refresh token: sha256, hex. Refresh tokens carry
/// 256 random bits, so a fast hash is enough; the token itself is never kept.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
