//! Permission grants: `GET/PUT /v1/permissions`, `GET /v1/permissions/effective`.
//!
//! Grants live in `zatabase.permission_grants`, one per (principal,
//! resource, object) in the caller's project; the host reads them with each
//! session check, and this route group tells it when they change.

use serde::Deserialize;
use serde_json::{Value as Json, json};
use zatabase_guest_kit::access::{
    ACTIONS, RESOURCES, action_name, implied, parse_action, parse_resource, require, resource_name,
};
use zatabase_guest_kit::session::{self, Action, Resource};
use zatabase_guest_kit::types::{Scalar, Value};
use zatabase_guest_kit::values::{json_rows, param};
use zatabase_guest_kit::{ApiError, Params, Request, Response, auth};

use crate::sessions::caller;
use crate::validate::is_uuid;
use zatabase_guest_kit::db;

/// The columns a grant is answered with.
const GRANT: &str = "id::text AS id, principal_type, principal_id, resource, resource_id,
    to_jsonb(actions) AS actions, granted_by::text AS granted_by,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at,
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS updated_at";

/// `GET /v1/permissions`: every grant in the caller's project.
pub fn list(_: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    require(Resource::Permissions, None, Action::Read)?;
    let found = db::query_json(
        &format!(
            "SELECT {GRANT} FROM zatabase.permission_grants
             WHERE project_id = $1::uuid ORDER BY created_at, id"
        ),
        &[param(&caller.project_id)],
    )?;
    Ok(Response::json(
        200,
        &json!({ "project_id": caller.project_id, "grants": json_rows(&found)? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    principal_type: String,
    principal_id: String,
    resource: String,
    #[serde(default)]
    resource_id: Option<String>,
    actions: Vec<String>,
}

/// A grant request, checked.
#[derive(Debug, PartialEq)]
struct Grant {
    principal_type: &'static str,
    principal_id: String,
    resource: Resource,
    resource_id: String,
    /// Distinct, lowest first; empty revokes the grant.
    actions: Vec<Action>,
}

fn check(body: GrantRequest) -> Result<Grant, ApiError> {
    let principal_type = match body.principal_type.as_str() {
        "user" => "user",
        "role" => "role",
        "team" => {
            return Err(ApiError::unprocessable(
                "`team` principals need the teams API, which this platform does not have yet; \
                 grant to a `user` or an organization `role`",
            ));
        }
        other => {
            return Err(ApiError::unprocessable(format!(
                "`principal_type` must be `user` or `role`, not `{other}`"
            )));
        }
    };
    let principal_id = body.principal_id.trim().to_ascii_lowercase();
    match principal_type {
        "user" if !is_uuid(&principal_id) => {
            return Err(ApiError::unprocessable(
                "`principal_id` of a `user` must be a user id (a UUID)",
            ));
        }
        "role" if !matches!(principal_id.as_str(), "owner" | "admin" | "member") => {
            return Err(ApiError::unprocessable(
                "`principal_id` of a `role` must be `owner`, `admin` or `member`",
            ));
        }
        _ => {}
    }
    let resource = parse_resource(&body.resource).ok_or_else(|| {
        let names: Vec<_> = RESOURCES.iter().map(|r| resource_name(*r)).collect();
        ApiError::unprocessable(format!(
            "unknown resource `{}`; one of: {}",
            body.resource,
            names.join(", ")
        ))
    })?;
    let resource_id = body.resource_id.unwrap_or_else(|| "*".to_owned());
    if !is_object_name(&resource_id) {
        return Err(ApiError::unprocessable(
            "`resource_id` must be `*` or a name of 1-128 characters of \
             [A-Za-z0-9_.-], not starting with `.` or `-`",
        ));
    }
    let mut actions = Vec::new();
    for name in &body.actions {
        let action = parse_action(name).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "unknown action `{name}`; one of: Read, Write, Admin"
            ))
        })?;
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    actions.sort_by_key(|a| ACTIONS.iter().position(|b| b == a));
    Ok(Grant {
        principal_type,
        principal_id,
        resource,
        resource_id,
        actions,
    })
}

fn is_object_name(text: &str) -> bool {
    text == "*"
        || (!text.is_empty()
            && text.len() <= 128
            && !text.starts_with(['.', '-'])
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
}

/// The most grants a project holds.
const MAX_GRANTS: i64 = 1000;

/// `PUT /v1/permissions`: creates (201) or replaces (200) the grant of a
/// principal on a resource; `"actions": []` revokes it.
pub fn put(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    require(Resource::Permissions, None, Action::Admin)?;
    let grant = check(request.json()?)?;
    if grant.principal_type == "user" {
        let user = db::query(
            "SELECT 1 FROM zatabase.users WHERE id = $1::uuid",
            &[param(&grant.principal_id)],
        )?;
        if user.rows.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "no user `{}`",
                grant.principal_id
            )));
        }
    }
    let key = [
        param(&caller.project_id),
        param(grant.principal_type),
        param(&grant.principal_id),
        param(resource_name(grant.resource)),
        param(&grant.resource_id),
    ];
    let (status, mut body) = if grant.actions.is_empty() {
        let gone = db::query_json(
            &format!(
                "DELETE FROM zatabase.permission_grants
                 WHERE project_id = $1::uuid AND principal_type = $2 AND principal_id = $3
                   AND resource = $4 AND resource_id = $5
                 RETURNING {GRANT}"
            ),
            &key,
        )?;
        let Some(mut grant) = json_rows(&gone)?.pop() else {
            return Err(ApiError::not_found("no such grant to revoke"));
        };
        grant["actions"] = json!([]);
        grant["revoked"] = json!(true);
        (200, grant)
    } else {
        let names: Vec<_> = grant.actions.iter().map(|a| action_name(*a)).collect();
        let mut params = key.to_vec();
        params.push(param(json!(names).to_string()));
        params.push(param(&caller.user_id));
        // A new grant only while the project holds fewer than
        // MAX_GRANTS: every session check loads its caller's grants.
        // (Requests racing past the count overshoot it by a few at most.)
        params.push(Value::Scalar(Scalar::Int64(MAX_GRANTS)));
        let saved = db::query_json(
            &format!(
                "INSERT INTO zatabase.permission_grants AS g
                   (project_id, principal_type, principal_id, resource, resource_id, actions, granted_by)
                 SELECT $1::uuid, $2, $3, $4, $5,
                        ARRAY(SELECT jsonb_array_elements_text($6::jsonb)), $7::uuid
                 WHERE EXISTS (
                     SELECT 1 FROM zatabase.permission_grants
                     WHERE project_id = $1::uuid AND principal_type = $2 AND principal_id = $3
                       AND resource = $4 AND resource_id = $5)
                   OR (SELECT count(*) FROM zatabase.permission_grants
                       WHERE project_id = $1::uuid) < $8
                 ON CONFLICT (project_id, principal_type, principal_id, resource, resource_id)
                 DO UPDATE SET actions = EXCLUDED.actions, granted_by = EXCLUDED.granted_by,
                               updated_at = now()
                 RETURNING {GRANT}, xmax = 0 AS created"
            ),
            &params,
        )?;
        let mut grant = json_rows(&saved)?.pop().ok_or_else(|| {
            ApiError::unprocessable(format!(
                "a project holds at most {MAX_GRANTS} grants; revoke some first"
            ))
        })?;
        let created = match &mut grant {
            Json::Object(fields) => fields.remove("created") == Some(Json::Bool(true)),
            _ => false,
        };
        (if created { 201 } else { 200 }, grant)
    };
    // Committed (one statement): every host's cached permissions for the
    // project are stale now; this one forgets them at once.
    auth::forget_access(&caller.project_id);
    body["project_id"] = json!(caller.project_id);
    Ok(Response::json(status, &body))
}

/// `GET /v1/permissions/effective`: what the caller may do in its project.
pub fn effective(_: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let permissions: Vec<_> = session::effective()
        .iter()
        .map(|p| {
            let actions: Vec<_> = implied(p.action).iter().map(|a| action_name(*a)).collect();
            json!({
                "resource": resource_name(p.resource),
                "resource_id": p.resource_id,
                "actions": actions,
            })
        })
        .collect();
    Ok(Response::json(
        200,
        &json!({
            "user_id": caller.user_id,
            "organization_id": caller.organization_id,
            "project_id": caller.project_id,
            "environment": caller.environment,
            "permissions": permissions,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Json) -> GrantRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn grants_are_checked() {
        let ok = check(request(json!({
            "principal_type": "user",
            "principal_id": "6F1C1A4E-0000-4000-8000-00000000000A",
            "resource": "Tables",
            "actions": ["Write", "Read", "Write"],
        })))
        .unwrap();
        assert_eq!(ok.principal_id, "6f1c1a4e-0000-4000-8000-00000000000a");
        assert_eq!(ok.resource_id, "*");
        assert_eq!(ok.actions, [Action::Read, Action::Write]);

        for (bad, says) in [
            (
                json!({"principal_type": "team", "principal_id": "x", "resource": "Tables", "actions": []}),
                "teams API",
            ),
            (
                json!({"principal_type": "group", "principal_id": "x", "resource": "Tables", "actions": []}),
                "`user` or `role`",
            ),
            (
                json!({"principal_type": "user", "principal_id": "bob", "resource": "Tables", "actions": []}),
                "UUID",
            ),
            (
                json!({"principal_type": "role", "principal_id": "root", "resource": "Tables", "actions": []}),
                "`member`",
            ),
            (
                json!({"principal_type": "role", "principal_id": "member", "resource": "tables", "actions": []}),
                "unknown resource `tables`",
            ),
            (
                json!({"principal_type": "role", "principal_id": "member", "resource": "Tables", "resource_id": "a b", "actions": []}),
                "`resource_id`",
            ),
            (
                json!({"principal_type": "role", "principal_id": "member", "resource": "Tables", "resource_id": "", "actions": []}),
                "`resource_id`",
            ),
            (
                json!({"principal_type": "role", "principal_id": "member", "resource": "Tables", "actions": ["Delete"]}),
                "unknown action `Delete`",
            ),
        ] {
            let error = check(request(bad.clone())).unwrap_err();
            assert_eq!(error.status, 422, "{bad}");
            assert!(error.message.contains(says), "{bad}: {}", error.message);
        }
    }
}
