//! Accounts: signing up and logging in.

use serde::Deserialize;
use zatabase_guest_kit::auth;
use zatabase_guest_kit::types::ErrorKind;
use zatabase_guest_kit::values::param;
use zatabase_guest_kit::{ApiError, Params, Request, Response};

use crate::sessions::{self, Account};
use crate::validate;
use zatabase_guest_kit::db;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignupRequest {
    email: String,
    password: String,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /v1/auth/signup`: a user, a personal organization, a default
/// project with `live` and `sandbox` environments, and a first session (in
/// `sandbox`), all in one transaction. The project's slug is the email's
/// local part and 64 random bits: with 32 (as before), ~77,000 signups as
/// `info@` somewhere had even odds of a clash, which read as "this email
/// address already exists".
pub fn signup(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: SignupRequest = request.json()?;
    let email = validate::email(&body.email)?;
    validate::password(&body.password, &email)?;
    let name = validate::name(body.name.as_deref())?;
    if let Err(seconds) = auth::signup_allowed() {
        return Err(ApiError::new(
            429,
            format!("too many signups and logins from this address; try again in {seconds} s"),
        )
        .with_retry_after(seconds));
    }
    let hash = auth::hash_password(&body.password);

    let tx = db::begin()?;
    let organization = name.clone().unwrap_or_else(|| email.clone());
    let created = tx.execute(
        "WITH u AS (
           INSERT INTO zatabase.users (email, name, password_hash) VALUES ($1, $2, $3) RETURNING id),
         o AS (
           INSERT INTO zatabase.organizations (name, personal, created_by)
           SELECT $4, true, id FROM u RETURNING id, created_by),
         m AS (
           INSERT INTO zatabase.organization_members (organization_id, user_id, role)
           SELECT id, created_by, 'owner' FROM o),
         p AS (
           INSERT INTO zatabase.projects (organization_id, name, slug, created_by)
           SELECT id, 'Default project', $5 || '-' || substr(md5(gen_random_uuid()::text), 1, 16), created_by
           FROM o RETURNING id),
         e AS (
           INSERT INTO zatabase.environments (project_id, name)
           SELECT p.id, env.name FROM p, (VALUES ('live'), ('sandbox')) AS env (name))
         SELECT u.id::text AS user_id, o.id::text AS organization_id, p.id::text AS project_id
         FROM u, o, p",
        &[
            param(&email),
            name.as_deref().map_or(zatabase_guest_kit::types::Value::Null, param),
            param(&hash),
            param(&organization),
            param(validate::slug_base(&email)),
        ],
    );
    let created = match created {
        Ok(created) => created,
        Err(e) if e.kind == ErrorKind::UniqueViolation => {
            return Err(ApiError::new(
                409,
                "an account with this email address already exists",
            ));
        }
        Err(e) => return Err(db::internal(e)),
    };
    let account = Account {
        user_id: db::text(&created, "user_id")?,
        email,
        name,
        organization_id: db::text(&created, "organization_id")?,
        project_id: db::text(&created, "project_id")?,
    };
    let response = sessions::open(&tx, &account, "sandbox", None, 201)?;
    db::commit(tx)?;
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
}

const BAD_CREDENTIALS: &str = "invalid email or password";

/// `POST /v1/auth/login`: a new session (in `sandbox`) for the right email
/// and password. A wrong email and a wrong password read the same and take
/// the same time; repeated failures are throttled per account and address.
pub fn login(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: LoginRequest = request.json()?;
    // An unparseable email cannot match an account; it still costs a hash.
    let email = validate::email(&body.email).unwrap_or_else(|_| body.email.trim().to_lowercase());
    if let Err(seconds) = auth::login_allowed(&email) {
        return Err(ApiError::new(
            429,
            format!("too many login attempts; try again in {seconds} s"),
        )
        .with_retry_after(seconds));
    }
    let found = db::query(
        "SELECT u.id::text AS user_id, u.password_hash, u.name,
                p.organization_id::text AS organization_id, p.id::text AS project_id
         FROM zatabase.users u
         LEFT JOIN LATERAL (
           SELECT p.id, p.organization_id
           FROM zatabase.projects p
           JOIN zatabase.organization_members m ON m.organization_id = p.organization_id
           WHERE m.user_id = u.id
           ORDER BY p.created_at, p.id
           LIMIT 1) p ON true
         WHERE u.email = $1",
        &[param(&email)],
    )?;
    let hash = db::optional_text(&found, "password_hash");
    let project = db::optional_text(&found, "project_id");
    if !auth::verify_password(&body.password, hash.as_deref()) || project.is_none() {
        auth::record_login(&email, false);
        return Err(ApiError::new(401, BAD_CREDENTIALS));
    }
    auth::record_login(&email, true);
    if let Some(old) = hash.as_deref().filter(|h| !auth::password_is_current(h)) {
        // Made before the operator changed the hashing parameters: made
        // again with these, unless another login did it first. A failure
        // here fails no login; the next one tries again.
        let new = auth::hash_password(&body.password);
        let _ = db::query(
            "UPDATE zatabase.users SET password_hash = $2
             WHERE id = $1::uuid AND password_hash = $3",
            &[param(db::text(&found, "user_id")?), param(new), param(old)],
        );
    }
    let account = Account {
        user_id: db::text(&found, "user_id")?,
        email,
        name: db::optional_text(&found, "name"),
        organization_id: db::text(&found, "organization_id")?,
        project_id: project.unwrap_or_default(),
    };
    let tx = db::begin()?;
    let response = sessions::open(&tx, &account, "sandbox", None, 200)?;
    db::commit(tx)?;
    Ok(response)
}
