//! `zatabase:platform/session`: who is calling, and what they may do.
//!
//! The host authenticates and loads the caller's permissions before the
//! guest runs (`auth::Auth::session_access`); this capability hands the
//! guest the outcome, a principal and answers to `check`, and never the
//! token they came from.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::zatabase::platform::session::{self, Action, Host, Permission, Principal, Resource};
use crate::auth::Access;
use crate::dispatch::HostState;

/// Per-request state of the capability.
pub struct SessionState {
    pub principal: Option<Principal>,
    pub access: Arc<Access>,
    pub request_id: Arc<str>,
}

impl Host for SessionState {
    fn caller(&mut self) -> Option<Principal> {
        self.principal.clone()
    }

    fn request_id(&mut self) -> String {
        self.request_id.to_string()
    }

    fn check(
        &mut self,
        resource: Resource,
        resource_id: Option<String>,
        action: Action,
    ) -> Result<(), String> {
        self.access.check(resource, resource_id.as_deref(), action)
    }

    fn effective(&mut self) -> Vec<Permission> {
        self.access.permissions().to_vec()
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    session::add_to_linker::<HostState, HasSelf<SessionState>>(linker, |state| &mut state.session)
}
