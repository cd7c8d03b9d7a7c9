//! Sessions: opening one (signup, login, switch), refreshing, ending.
//!
//! A session is a row in `zatabase.sessions`; its access tokens are signed
//! JWTs, its refresh tokens single-use and stored only as digests. Using a
//! refresh token twice is taken as theft: the session is revoked, and with
//! it its family, the sessions that `switch` opened in its place (a switch
//! spends the session's refresh token as a refresh does).

use serde::Deserialize;
use serde_json::json;
use zatabase_guest_kit::auth::{self, Claims, Tokens};
use zatabase_guest_kit::platform_db::Transaction;
use zatabase_guest_kit::types::Value;
use zatabase_guest_kit::values::{boolean, cell, param, text};
use zatabase_guest_kit::{ApiError, Params, Request, Response};

use crate::validate;
use zatabase_guest_kit::db;

/// Who a new session is for.
pub struct Account {
    pub user_id: String,
    pub email: String,
    pub name: Option<String>,
    pub organization_id: String,
    pub project_id: String,
}

/// Opens a session in `environment` within `tx`, in the family of the
/// session it replaces (none: a family of its own), and answers with its
/// tokens (the body every token-issuing endpoint returns).
pub fn open(
    tx: &Transaction,
    account: &Account,
    environment: &str,
    family: Option<&str>,
    status: u16,
) -> Result<Response, ApiError> {
    let id = db::text(
        &db::tx(tx, "SELECT gen_random_uuid()::text AS id", &[])?,
        "id",
    )?;
    let tokens = auth::issue_tokens(&Claims {
        user_id: account.user_id.clone(),
        session_id: id.clone(),
        organization_id: account.organization_id.clone(),
        project_id: account.project_id.clone(),
        environment: environment.to_owned(),
    });
    db::tx(
        tx,
        "WITH s AS (
           INSERT INTO zatabase.sessions
             (id, user_id, organization_id, project_id, environment, expires_at, family_id)
           VALUES ($1::uuid, $2::uuid, $3::uuid, $4::uuid, $5,
                   now() + make_interval(secs => $6::int), $8::uuid)
           RETURNING id, expires_at)
         INSERT INTO zatabase.refresh_tokens (digest, session_id, expires_at)
         SELECT $7, id, expires_at FROM s",
        &[
            param(&id),
            param(&account.user_id),
            param(&account.organization_id),
            param(&account.project_id),
            param(environment),
            param(tokens.refresh_expires_in.to_string()),
            param(&tokens.refresh_digest),
            family.map_or(Value::Null, param),
        ],
    )?;
    Ok(answer(status, account, environment, tokens))
}

/// The body every token-issuing endpoint answers with.
fn answer(status: u16, account: &Account, environment: &str, tokens: Tokens) -> Response {
    Response::json(
        status,
        &json!({
            "user": { "id": account.user_id, "email": account.email, "name": account.name },
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
            "environment": environment,
        }),
    )
}

/// The caller; the host lets only authenticated requests reach the
/// non-public routes, so its absence is a host misconfiguration.
pub use zatabase_guest_kit::access::caller;

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(401, message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

/// `POST /v1/auth/refresh`: a new pair for a refresh token, which is then
/// spent. A spent token presented again (refreshed, or its session switched
/// away from) revokes the session's family, unless it was refreshed within
/// the reuse interval (`auth.refresh_reuse_interval_secs`), was not retried
/// before, and its session lives: then it is a client's retry (its answer
/// lost, or two tabs refreshing at once) and gets a pair of its own for the
/// session, once (a second presentation is theft: a thief who saw the
/// token cannot start its own chain unnoticed while the client retries).
pub fn refresh(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: RefreshRequest = request.json()?;
    let digest = auth::digest(body.refresh_token.trim());
    let reuse_secs = auth::refresh_reuse_interval();
    let tx = db::begin()?;
    let found = db::tx(
        &tx,
        "SELECT rt.session_id::text AS session_id,
                (rt.used_at IS NOT NULL
                   AND NOT ($2::int > 0 AND rt.retried_at IS NULL
                            AND rt.used_at > clock_timestamp() - make_interval(secs => $2::int)
                            AND s.revoked_at IS NULL))
                  OR s.revoked_reason = 'switched' AS spent,
                rt.used_at IS NOT NULL AS retried,
                coalesce(s.family_id, s.id)::text AS family,
                rt.expires_at <= now() OR s.expires_at <= now() OR s.revoked_at IS NOT NULL
                  OR NOT zatabase.reaches_project(s.project_id, s.user_id) AS dead,
                s.user_id::text AS user_id, s.organization_id::text AS organization_id,
                s.project_id::text AS project_id, s.environment, u.email, u.name
         FROM zatabase.refresh_tokens rt
         JOIN zatabase.sessions s ON s.id = rt.session_id
         JOIN zatabase.users u ON u.id = s.user_id
         WHERE rt.digest = $1
         FOR UPDATE OF rt, s",
        &[param(&digest), param(reuse_secs.to_string())],
    )?;
    if found.rows.is_empty() {
        return Err(unauthorized("invalid refresh token"));
    }
    let session_id = db::text(&found, "session_id")?;
    if cell(&found, 0, "spent").and_then(boolean) == Some(true) {
        let family = db::text(&found, "family")?;
        let revoked = db::tx(
            &tx,
            "UPDATE zatabase.sessions SET revoked_at = now(), revoked_reason = 'refresh token reused'
             WHERE (id = $1::uuid OR family_id = $1::uuid) AND revoked_at IS NULL
             RETURNING id::text AS id",
            &[param(&family)],
        )?;
        db::commit(tx)?;
        for row in 0..revoked.rows.len() {
            if let Some(id) = cell(&revoked, row, "id").and_then(text) {
                auth::forget_session(id);
            }
        }
        return Err(unauthorized(
            "this refresh token was already used; the session has been revoked",
        ));
    }
    if cell(&found, 0, "dead").and_then(boolean) != Some(false) {
        return Err(unauthorized("the session has ended; log in again"));
    }
    // A retry leaves the token spent when it first was, and marks it
    // retried: the next presentation is theft.
    let spend = if cell(&found, 0, "retried").and_then(boolean) == Some(true) {
        "UPDATE zatabase.refresh_tokens SET retried_at = now() WHERE digest = $1"
    } else {
        "UPDATE zatabase.refresh_tokens SET used_at = now() WHERE digest = $1"
    };
    db::tx(&tx, spend, &[param(&digest)])?;
    let account = Account {
        user_id: db::text(&found, "user_id")?,
        email: db::text(&found, "email")?,
        name: db::optional_text(&found, "name"),
        organization_id: db::text(&found, "organization_id")?,
        project_id: db::text(&found, "project_id")?,
    };
    let environment = db::text(&found, "environment")?;
    let tokens = auth::issue_tokens(&Claims {
        user_id: account.user_id.clone(),
        session_id: session_id.clone(),
        organization_id: account.organization_id.clone(),
        project_id: account.project_id.clone(),
        environment: environment.clone(),
    });
    db::tx(
        &tx,
        "WITH s AS (
           UPDATE zatabase.sessions SET expires_at = now() + make_interval(secs => $2::int)
           WHERE id = $1::uuid RETURNING id, expires_at)
         INSERT INTO zatabase.refresh_tokens (digest, session_id, expires_at)
         SELECT $3, id, expires_at FROM s",
        &[
            param(&session_id),
            param(tokens.refresh_expires_in.to_string()),
            param(&tokens.refresh_digest),
        ],
    )?;
    db::commit(tx)?;
    Ok(answer(200, &account, &environment, tokens))
}

/// `POST /v1/auth/logout`: ends the caller's session; its access and
/// refresh tokens stop working at once (the host checks the session on
/// every request).
pub fn logout(_: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    db::query(
        "UPDATE zatabase.sessions SET revoked_at = now(), revoked_reason = 'logout'
         WHERE id = $1::uuid AND revoked_at IS NULL",
        &[param(&caller.session_id)],
    )?;
    auth::forget_session(&caller.session_id);
    Ok(Response::no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    environment: String,
    /// Another project the caller can reach: one of its organizations', or
    /// one where it holds a grant. The current project when absent.
    #[serde(default)]
    project_id: Option<String>,
}

/// `POST /v1/auth/switch`: a new session in an environment of the caller's
/// project, or of another project it can reach; the current session ends.
pub fn switch(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let body: SwitchRequest = request.json()?;
    if body.environment != "live" && body.environment != "sandbox" {
        return Err(ApiError::unprocessable(
            "`environment` must be `live` or `sandbox`",
        ));
    }
    let project = body
        .project_id
        .as_deref()
        .map_or(caller.project_id.clone(), |p| p.trim().to_ascii_lowercase());
    if !validate::is_uuid(&project) {
        return Err(ApiError::unprocessable(
            "`project_id` must be a project id (a UUID)",
        ));
    }
    let tx = db::begin()?;
    // A project is reachable by its creator, its organization's members and
    // anyone holding a grant in it; any other project reads as absent.
    let account = db::tx(
        &tx,
        "SELECT u.id::text AS user_id, u.email, u.name, p.organization_id::text AS organization_id
         FROM zatabase.users u
         JOIN zatabase.projects p ON p.id = $2::uuid
         JOIN zatabase.environments e ON e.project_id = p.id AND e.name = $3
         WHERE u.id = $1::uuid
           AND zatabase.reaches_project(p.id, u.id)",
        &[
            param(&caller.user_id),
            param(&project),
            param(&body.environment),
        ],
    )?;
    if account.rows.is_empty() {
        return Err(ApiError::not_found(if project == caller.project_id {
            format!("the project has no `{}` environment", body.environment)
        } else {
            format!("no project `{project}` that you can reach")
        }));
    }
    // The session may have ended since the host checked it (a logout or
    // another switch racing this one): then it opens nothing.
    let replaced = db::tx(
        &tx,
        "UPDATE zatabase.sessions SET revoked_at = now(), revoked_reason = 'switched'
         WHERE id = $1::uuid AND revoked_at IS NULL
         RETURNING coalesce(family_id, id)::text AS family",
        &[param(&caller.session_id)],
    )?;
    if replaced.rows.is_empty() {
        return Err(unauthorized("the session has ended; log in again"));
    }
    let family = db::text(&replaced, "family")?;
    let account = Account {
        user_id: caller.user_id.clone(),
        email: db::text(&account, "email")?,
        name: db::optional_text(&account, "name"),
        organization_id: db::text(&account, "organization_id")?,
        project_id: project,
    };
    let response = open(&tx, &account, &body.environment, Some(&family), 200)?;
    db::commit(tx)?;
    auth::forget_session(&caller.session_id);
    Ok(response)
}
