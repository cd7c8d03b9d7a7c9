//! `DATABASE_URL`: an external Postgres instead of the embedded one.

use serde_json::json;
use zatabase_tests::Host;
use zatabase_tests::postgres::Standalone;

#[test]
fn an_external_postgres_without_pgvector_is_refused_at_start() {
    let postgres = Standalone::start(false);
    let refused = Host::builder()
        .env("DATABASE_URL", &postgres.url())
        .try_start();
    let log = refused.err().expect("the host must not start");
    assert!(log.contains("no pgvector extension"), "{log}");
}

#[test]
fn an_external_postgres_with_pgvector_serves_tenants_over_password_logins() {
    let postgres = Standalone::start(true);
    let host = Host::builder().env("DATABASE_URL", &postgres.url()).start();
    assert!(
        !host.data_dir.join("postgres/postmaster.pid").exists(),
        "no embedded Postgres runs beside an external one"
    );
    assert_eq!(host.get("/health/ready").status, 200);
    host.sql_ok("CREATE TABLE outside (v vector(2))", &[]);
    host.sql_ok("INSERT INTO outside VALUES ($1)", &[json!([3, 4])]);
    let body = host.sql_ok("SELECT v <-> '[0,0]' AS d FROM outside", &[]);
    assert_eq!(body["rows"], json!([{ "d": 5.0 }]));
    let whoami = host.sql_ok("SELECT session_user AS login", &[]);
    let login = whoami["rows"][0]["login"].as_str().unwrap();
    assert!(
        login.starts_with("tenant_") && login.ends_with("_sandbox_login"),
        "{login}"
    );
}
