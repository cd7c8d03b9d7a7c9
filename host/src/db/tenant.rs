//! Tenants as Postgres sees them: a schema, a NOLOGIN role that owns it, and
//! a LOGIN role that is a member of nothing but that owner.
//!
//! The host runs a tenant's SQL on connections logged in as the tenant's
//! login role and switches to the owner role for the transaction. A
//! `RESET ROLE` lands on the login role, which can reach nothing outside its
//! own schema; `SET ROLE` to anyone else, `SET SESSION AUTHORIZATION`, file
//! access and `COPY ... PROGRAM` are refused by Postgres itself.

use anyhow::ensure;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Executor};

/// Names of one tenant's Postgres objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Stable key, `[a-z0-9_]`, unique across the platform.
    pub key: String,
    pub schema: String,
    pub owner_role: String,
    pub login_role: String,
}

impl Tenant {
    pub fn new(key: &str) -> anyhow::Result<Self> {
        ensure!(
            !key.is_empty()
                && key.len() <= 40
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "tenant key `{key}` must be 1-40 characters of [a-z0-9_]"
        );
        Ok(Self {
            key: key.to_owned(),
            schema: format!("tenant_{key}"),
            owner_role: format!("tenant_{key}_owner"),
            login_role: format!("tenant_{key}_login"),
        })
    }

    /// The tenant of one environment (`live` or `sandbox`) of a project.
    pub fn for_environment(project_id: &str, environment: &str) -> anyhow::Result<Self> {
        let project = uuid::Uuid::parse_str(project_id)
            .map_err(|_| anyhow::anyhow!("project id `{project_id}` is not a UUID"))?;
        ensure!(
            matches!(environment, "live" | "sandbox"),
            "unknown environment `{environment}`"
        );
        Self::new(&format!("{}_{environment}", project.simple()))
    }
}

/// Creates the tenant's roles and schema if they are missing; safe to run
/// again. `password` is set on the login role (external databases need it;
/// the embedded one authenticates its Unix socket by trust). A role may
/// change its own password and defaults (`ALTER ROLE CURRENT_USER`), so
/// both are set again here, and any other default dropped.
pub async fn provision(
    conn: &mut PgConnection,
    tenant: &Tenant,
    password: &str,
    database: &str,
    connection_limit: u32,
) -> anyhow::Result<()> {
    // Every name here is built by `Tenant::new` from [a-z0-9_]; the password
    // is hex. Quoting still follows the rules, so no input can break out.
    let owner = ident(&tenant.owner_role);
    let login = ident(&tenant.login_role);
    let schema = ident(&tenant.schema);
    let password = super::sqltext::quote_literal(password).expect("hex holds no NUL");
    let database = ident(database);
    let sql = format!(
        r#"
INSERT INTO zatabase.ddl_locks VALUES ('provision') ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name;
DO $provision$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner_name}') THEN
    CREATE ROLE {owner} NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login_name}') THEN
    CREATE ROLE {login} LOGIN IN ROLE {owner};
  END IF;
END
$provision$;
ALTER ROLE {login} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  CONNECTION LIMIT {connection_limit} PASSWORD {password};
ALTER ROLE {login} RESET ALL;
ALTER ROLE {login} SET search_path = {schema}, extensions;
CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner};
GRANT USAGE ON SCHEMA extensions TO {owner};
GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {login};
"#,
        owner_name = tenant.owner_role,
        login_name = tenant.login_role,
    );
    conn.execute(sqlx::raw_sql(AssertSqlSafe(sql))).await?;
    Ok(())
}

/// A double-quoted identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(Tenant::new("a1_b").is_ok());
        for bad in ["", "A", "a-b", "a\"b", &"x".repeat(41)] {
            assert!(Tenant::new(bad).is_err(), "{bad}");
        }
        let tenant =
            Tenant::for_environment("6f1c1a4e-0000-4000-8000-00000000000a", "sandbox").unwrap();
        assert_eq!(
            tenant.schema,
            "tenant_6f1c1a4e00004000800000000000000a_sandbox"
        );
        assert!(tenant.owner_role.len() < 64, "fits a Postgres identifier");
        assert!(Tenant::for_environment("not-a-uuid", "live").is_err());
        assert!(Tenant::for_environment("6f1c1a4e-0000-4000-8000-00000000000a", "prod").is_err());
    }
}
