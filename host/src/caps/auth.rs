//! `zatabase:platform/auth`: password hashing, token issuing and login
//! throttling for the accounts route group. The keys stay in the host.

use std::net::IpAddr;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::zatabase::platform::auth::{self, Claims, Host, Tokens};
use crate::auth::{Auth, digest};
use crate::dispatch::HostState;

/// Per-request state of the capability.
pub struct AuthState {
    pub auth: Arc<Auth>,
    pub client: IpAddr,
}

impl Host for AuthState {
    async fn hash_password(&mut self, password: String) -> wasmtime::Result<String> {
        self.auth
            .hash_password(password)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("{e:#}")))
    }

    async fn verify_password(&mut self, password: String, hash: Option<String>) -> bool {
        self.auth.verify_password(password, hash).await
    }

    async fn password_is_current(&mut self, hash: String) -> bool {
        self.auth.password_is_current(&hash)
    }

    async fn issue_tokens(&mut self, claims: Claims) -> Tokens {
        let tokens = self.auth.issue(
            &claims.user_id,
            &claims.session_id,
            &claims.organization_id,
            &claims.project_id,
            &claims.environment,
        );
        Tokens {
            access_token: tokens.access_token,
            expires_in: tokens.expires_in,
            refresh_token: tokens.refresh_token,
            refresh_digest: tokens.refresh_digest,
            refresh_expires_in: tokens.refresh_expires_in,
        }
    }

    async fn refresh_reuse_interval(&mut self) -> u32 {
        self.auth.refresh_reuse_interval_secs
    }

    async fn digest(&mut self, token: String) -> String {
        digest(&token)
    }

    async fn login_allowed(&mut self, email: String) -> Result<(), u32> {
        self.auth.login_allowed(&email, self.client)
    }

    async fn signup_allowed(&mut self) -> Result<(), u32> {
        self.auth.signup_allowed(self.client)
    }

    async fn record_login(&mut self, email: String, success: bool) {
        // A failure was counted when the attempt began.
        if success {
            self.auth.throttle.succeeded(&email, self.client);
        }
    }

    async fn forget_session(&mut self, session_id: String) {
        self.auth.sessions.forget(&session_id);
    }

    async fn forget_access(&mut self, scope_id: String) {
        self.auth.sessions.forget_scope(&scope_id);
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    auth::add_to_linker::<HostState, HasSelf<AuthState>>(linker, |state| &mut state.auth)
}
