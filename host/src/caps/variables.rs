//! `fermyon:spin/variables`: a function's variables, as Spin serves them, so
//! a component built with spin-sdk reads them unchanged.
//!
//! A function's `variables` and `secrets` (set through `/v1/functions`) are
//! its variables; secrets are readable here by the function they belong to
//! and answered by the API to no one.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::fermyon::spin::variables::{self, Error, Host};
use crate::dispatch::{FunctionContext, HostState};

/// Per-request state: the function being run, if it is one.
pub struct VariablesState {
    pub function: Option<Arc<FunctionContext>>,
}

/// Spin's rule for a variable name: lower-case ASCII letters, digits and
/// underscores, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Host for VariablesState {
    fn get(&mut self, name: String) -> Result<String, Error> {
        if !valid_name(&name) {
            return Err(Error::InvalidName(format!(
                "`{name}` is not a variable name: lower-case letters, digits and `_`, \
                 starting with a letter"
            )));
        }
        self.function
            .as_ref()
            .and_then(|f| f.variables.get(&name))
            .cloned()
            .ok_or_else(|| Error::Undefined(format!("no variable `{name}`")))
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    variables::add_to_linker::<HostState, HasSelf<VariablesState>>(linker, |state| {
        &mut state.variables
    })
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
    }
}
