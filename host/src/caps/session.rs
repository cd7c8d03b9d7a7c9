//! `zatabase:platform/session`: who is calling.
//!
//! The host authenticates before the guest runs; this capability hands the
//! guest the outcome, a principal, and never the token it came from.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::zatabase::platform::session::{self, Host, Principal};
use crate::dispatch::HostState;

/// Per-request state of the capability.
pub struct SessionState {
    pub principal: Option<Principal>,
    pub request_id: Arc<str>,
}

impl Host for SessionState {
    fn caller(&mut self) -> Option<Principal> {
        self.principal.clone()
    }

    fn request_id(&mut self) -> String {
        self.request_id.to_string()
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    session::add_to_linker::<HostState, HasSelf<SessionState>>(linker, |state| &mut state.session)
}
