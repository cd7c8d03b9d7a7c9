//! Spin's variables, in both versions: `fermyon:spin/variables@2.0.0`
//! (spin-sdk 5) and `spin:variables/variables@3.0.0` (spin-sdk 7, async), so
//! a component built with spin-sdk reads them unchanged.
//!
//! A function's `variables` and `secrets` (set through `/v1/functions`) are
//! its variables; secrets are readable here by the function they belong to
//! and answered by the API to no one. Spin serves the same variables through
//! `wasi:config/store`, and so does this host.

use std::sync::Arc;

use wasmtime::component::{Accessor, HasSelf, Linker};

use super::fermyon::spin::variables as v2;
use super::spin::variables::variables as v3;
use super::wasi::config::store as config;
use crate::dispatch::{FunctionContext, HostState};

/// Per-request state: the function being run, if it is one.
pub struct VariablesState {
    pub function: Option<Arc<FunctionContext>>,
}

/// Spin's rule for a variable name: lower-case ASCII letters, digits and
/// single underscores, starting with a letter and ending with a letter or
/// digit.
pub fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Why a variable has no value, whichever version asked.
enum Missing {
    InvalidName(String),
    Undefined(String),
}

impl VariablesState {
    fn get(&self, name: &str) -> Result<String, Missing> {
        if !valid_name(name) {
            return Err(Missing::InvalidName(format!(
                "`{name}` is not a variable name: lower-case letters, digits and single `_`s, \
                 starting with a letter and ending with a letter or digit"
            )));
        }
        self.function
            .as_ref()
            .and_then(|f| f.variables.get(name))
            .cloned()
            .ok_or_else(|| Missing::Undefined(format!("no variable `{name}`")))
    }
}

impl v2::Host for VariablesState {
    fn get(&mut self, name: String) -> Result<String, v2::Error> {
        VariablesState::get(self, &name).map_err(|missing| match missing {
            Missing::InvalidName(message) => v2::Error::InvalidName(message),
            Missing::Undefined(message) => v2::Error::Undefined(message),
        })
    }
}

impl v3::Host for VariablesState {}

impl<T> v3::HostWithStore<T> for HasSelf<VariablesState> {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> Result<String, v3::Error> {
        accessor
            .with(|mut access| access.get().get(&name))
            .map_err(|missing| match missing {
                Missing::InvalidName(message) => v3::Error::InvalidName(message),
                Missing::Undefined(message) => v3::Error::Undefined(message),
            })
    }
}

/// `wasi:config/store`: a key that is no variable name is simply not set.
impl config::Host for VariablesState {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        match VariablesState::get(self, &key) {
            Ok(value) => Ok(Some(value)),
            Err(Missing::InvalidName(_) | Missing::Undefined(_)) => Ok(None),
        }
    }

    /// By name, so the order is the same on every call.
    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        let mut all: Vec<(String, String)> = self
            .function
            .as_ref()
            .map(|f| {
                f.variables
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        all.sort_unstable();
        Ok(all)
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v2::add_to_linker::<HostState, HasSelf<VariablesState>>(linker, |state| &mut state.variables)?;
    config::add_to_linker::<HostState, HasSelf<VariablesState>>(linker, |state| {
        &mut state.variables
    })?;
    v3::add_to_linker::<HostState, HasSelf<VariablesState>>(linker, |state| &mut state.variables)
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_follow_spin() {
        assert!(valid_name("api_key2"));
        assert!(!valid_name("2key"));
        assert!(!valid_name("Key"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
        assert!(!valid_name("a_"));
        assert!(!valid_name("a__b"));
        assert!(valid_name("a_b_2"));
    }
}
