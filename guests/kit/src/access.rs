//! Permissions as route groups use them: asking the host before acting, and
//! the API's spelling of resource kinds and actions.

use crate::ApiError;
use crate::session::{self, Action, Resource};

/// The authenticated caller; the host lets no request without one reach a
/// non-public route, so this is a 401 only on a public one.
pub fn caller() -> Result<session::Principal, ApiError> {
    session::caller().ok_or_else(|| ApiError::new(401, "authentication required"))
}

/// Asks the host whether the caller may take `action` on `resource` (the
/// object `id`, or with none, all of them); a denial is the API's 403,
/// "Insufficient permissions: requires Read on Tables".
pub fn require(resource: Resource, id: Option<&str>, action: Action) -> Result<(), ApiError> {
    session::check(resource, id, action).map_err(|message| ApiError::new(403, message))
}

include!("../../../wit/access-names.rs");

/// `action` and the actions it implies, lowest first.
pub fn implied(action: Action) -> &'static [Action] {
    match action {
        Action::Read => &ACTIONS[..1],
        Action::Write => &ACTIONS[..2],
        Action::Admin => &ACTIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for resource in RESOURCES {
            assert_eq!(parse_resource(resource_name(resource)), Some(resource));
        }
        for action in ACTIONS {
            assert_eq!(parse_action(action_name(action)), Some(action));
        }
        assert_eq!(parse_resource("tables"), None, "names are case-sensitive");
        assert_eq!(implied(Action::Write), &[Action::Read, Action::Write]);
    }
}
