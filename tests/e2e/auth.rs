//! Accounts and sessions: /v1/auth/*, /v1/whoami, /v1/environments, and the
//! host's token checks on every other route.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use zatabase_tests::{Account, Host, unique_email};

const PASSWORD: &str = "a long enough password";
/// The signing key the forged-token tests configure, so they can also make
/// tokens the host would sign itself.
const KEY_HEX: &str = "6a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283848586878889";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get_as(host: &Host, path: &str, token: &str) -> zatabase_tests::Resp {
    host.request(
        "GET",
        path,
        &[("authorization", &bearer(token))],
        Vec::new(),
    )
}

fn post_as(host: &Host, path: &str, token: &str, body: &Value) -> zatabase_tests::Resp {
    host.request(
        "POST",
        path,
        &[
            ("authorization", &bearer(token)),
            ("content-type", "application/json"),
        ],
        serde_json::to_vec(body).unwrap(),
    )
}

fn login(host: &Host, email: &str, password: &str) -> zatabase_tests::Resp {
    host.post_json(
        "/v1/auth/login",
        &json!({ "email": email, "password": password }),
    )
}

fn refresh(host: &Host, token: &str) -> zatabase_tests::Resp {
    host.post_json("/v1/auth/refresh", &json!({ "refresh_token": token }))
}

#[test]
fn signup_login_whoami_and_environments() {
    let host = Host::start();
    let email = unique_email("Ada");
    let response = host.post_json(
        "/v1/auth/signup",
        &json!({ "email": format!("  {}  ", email.to_uppercase()), "password": PASSWORD, "name": "Ada" }),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    let body = response.json();
    assert_eq!(body["user"]["email"], email.to_lowercase());
    assert_eq!(body["user"]["name"], "Ada");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["environment"], "sandbox");
    let account = Account::from(&body);

    let me = get_as(&host, "/v1/whoami", &account.access_token);
    assert_eq!(me.status, 200, "{}", me.text());
    let me = me.json();
    assert_eq!(me["user_id"], account.user_id);
    assert_eq!(me["email"], email.to_lowercase());
    assert_eq!(me["environment"], "sandbox");
    for field in ["session_id", "organization_id", "project_id", "expires_at"] {
        assert!(
            me[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {me}"
        );
    }
    assert!(me["expires_at"].as_str().unwrap().ends_with('Z'));

    let environments = get_as(&host, "/v1/environments", &account.access_token).json();
    assert_eq!(
        environments,
        json!({ "environments": [
            { "name": "live", "current": false },
            { "name": "sandbox", "current": true }
        ]})
    );

    let again = login(&host, &email, PASSWORD);
    assert_eq!(again.status, 200, "{}", again.text());
    let second = Account::from(&again.json());
    assert_eq!(second.user_id, account.user_id);
    let me_again = get_as(&host, "/v1/whoami", &second.access_token).json();
    assert_ne!(
        me_again["session_id"], me["session_id"],
        "a login opens a new session"
    );
    assert_eq!(me_again["project_id"], me["project_id"]);
}

#[test]
fn signup_refuses_bad_input_and_duplicates() {
    let host = Host::start();
    let email = unique_email("bea");
    let signup = |body: Value| host.post_json("/v1/auth/signup", &body);
    let message =
        signup(json!({ "email": "not-an-email", "password": PASSWORD })).expect_error(422);
    assert!(message.contains("email"), "{message}");
    let message = signup(json!({ "email": email, "password": "short" })).expect_error(422);
    assert!(message.contains("at least 8 characters"), "{message}");
    let message =
        signup(json!({ "email": email, "password": email.to_uppercase() })).expect_error(422);
    assert!(message.contains("must not be the email"), "{message}");
    signup(json!({ "email": email })).expect_error(422);
    signup(json!({ "email": email, "password": PASSWORD, "role": "admin" })).expect_error(422);
    signup(json!({ "email": 7, "password": PASSWORD })).expect_error(422);
    host.request(
        "POST",
        "/v1/auth/signup",
        &[("content-type", "application/json")],
        b"{\"email\":".to_vec(),
    )
    .expect_error(400);
    host.request("POST", "/v1/auth/signup", &[], b"{}".to_vec())
        .expect_error(415);

    host.signup(&email, PASSWORD);
    let message = signup(
        json!({ "email": format!(" {} ", email.to_uppercase()), "password": "another password" }),
    )
    .expect_error(409);
    assert!(message.contains("already exists"), "{message}");
    // The refused signup changed nothing: the first password still works,
    // the second does not.
    assert_eq!(login(&host, &email, PASSWORD).status, 200);
    login(&host, &email, "another password").expect_error(401);

    // An accent composed or not is one address, for signup and login; an
    // invisible character makes no look-alike.
    let composed = format!("jos\u{e9}-{email}");
    let decomposed = format!("jose\u{301}-{email}");
    host.signup(&composed, PASSWORD);
    signup(json!({ "email": decomposed, "password": PASSWORD })).expect_error(409);
    assert_eq!(login(&host, &decomposed, PASSWORD).status, 200);
    signup(json!({ "email": format!("\u{200b}{email}"), "password": PASSWORD })).expect_error(422);
}

#[test]
fn a_wrong_email_and_a_wrong_password_read_the_same() {
    let host = Host::start();
    let email = unique_email("cy");
    host.signup(&email, PASSWORD);
    let wrong_password = login(&host, &email, "not the password");
    let wrong_email = login(&host, &unique_email("nobody"), PASSWORD);
    let bad_email = login(&host, "not an email", PASSWORD);
    assert_eq!(
        wrong_password.expect_error(401),
        wrong_email.expect_error(401)
    );
    assert_eq!(wrong_password.body, wrong_email.body);
    assert_eq!(wrong_email.body, bad_email.body);
    host.post_json("/v1/auth/login", &json!({ "email": email }))
        .expect_error(422);
}

#[test]
fn ended_sessions_and_spent_tokens_are_deleted_in_time() {
    let mut host = Host::start();
    let kept = host.signup(&unique_email("kept"), PASSWORD);
    let rotated = refresh(&host, &kept.refresh_token);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let current = Account::from(&rotated.json());
    let ended = host.signup(&unique_email("ended"), PASSWORD);
    let rows = |host: &Host, user: &str| {
        host.platform_sql(&format!(
            "SELECT (SELECT count(*) FROM zatabase.sessions WHERE user_id = '{user}') || ',' ||
               (SELECT count(*) FROM zatabase.refresh_tokens t JOIN zatabase.sessions s
                  ON s.id = t.session_id WHERE s.user_id = '{user}')"
        ))
    };
    assert_eq!(rows(&host, &kept.user_id), "1,2");
    assert_eq!(rows(&host, &ended.user_id), "1,1");
    // Two days after the spend, four after the other session's expiry (the
    // spent token of a day ago stays).
    host.platform_sql(&format!(
        "UPDATE zatabase.refresh_tokens t SET used_at = now() - interval '2 days'
         FROM zatabase.sessions s WHERE s.id = t.session_id AND s.user_id = '{}'
           AND t.used_at IS NOT NULL;
         UPDATE zatabase.sessions SET expires_at = now() - interval '4 days'
         WHERE user_id = '{}'",
        kept.user_id, ended.user_id
    ));
    // Each host sweeps as it starts, then hourly.
    host.keep_data();
    assert!(host.stop().success());
    let data_dir = host.data_dir.clone();
    drop(host);
    let host = Host::builder().data_dir(&data_dir).start();
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(10), || {
            rows(&host, &kept.user_id) == "1,1" && rows(&host, &ended.user_id) == "0,0"
        }),
        "{} {}",
        rows(&host, &kept.user_id),
        rows(&host, &ended.user_id)
    );
    // The spent token is now unknown (no longer taken as theft), and the
    // session goes on.
    refresh(&host, &kept.refresh_token).expect_error(401);
    assert_eq!(refresh(&host, &current.refresh_token).status, 200);
    refresh(&host, &ended.refresh_token).expect_error(401);
}

#[test]
fn refresh_tokens_rotate_and_a_reused_one_revokes_the_session() {
    let host = Host::start();
    let first = host.signup(&unique_email("dee"), PASSWORD);
    let rotated = refresh(&host, &first.refresh_token);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let second = Account::from(&rotated.json());
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(
        get_as(&host, "/v1/whoami", &second.access_token).status,
        200
    );
    // The same session: both access tokens name it.
    let sid = |token: &str| get_as(&host, "/v1/whoami", token).json()["session_id"].clone();
    assert_eq!(sid(&first.access_token), sid(&second.access_token));

    // Presented again within the reuse interval (10 s): a client's retry
    // (its answer lost, or a second tab refreshing at once), given a pair
    // of its own for the same session, which lives on.
    let retried = refresh(&host, &first.refresh_token);
    assert_eq!(retried.status, 200, "{}", retried.text());
    let third = Account::from(&retried.json());
    assert_ne!(third.refresh_token, second.refresh_token);
    assert_eq!(sid(&third.access_token), sid(&second.access_token));
    assert_eq!(
        get_as(&host, "/v1/whoami", &second.access_token).status,
        200
    );

    // Once: presented a third time, even within the interval, the spent
    // token is taken as theft, and the session ends with every pair of it.
    let message = refresh(&host, &first.refresh_token).expect_error(401);
    assert!(message.contains("already used"), "{message}");
    for ended in [&first, &second, &third] {
        get_as(&host, "/v1/whoami", &ended.access_token).expect_error(401);
    }
    refresh(&host, &second.refresh_token).expect_error(401);
    refresh(&host, &third.refresh_token).expect_error(401);

    // Past the interval a first retry is theft too (its first use moved
    // back in time, rather than waited for).
    let other = host.signup(&unique_email("dee2"), PASSWORD);
    let next = Account::from(&refresh(&host, &other.refresh_token).json());
    host.platform_sql(&format!(
        "UPDATE zatabase.refresh_tokens SET used_at = used_at - interval '11 seconds'
         WHERE session_id = '{}'::uuid AND used_at IS NOT NULL",
        sid(&next.access_token).as_str().unwrap()
    ));
    let message = refresh(&host, &other.refresh_token).expect_error(401);
    assert!(message.contains("already used"), "{message}");
    get_as(&host, "/v1/whoami", &next.access_token).expect_error(401);

    refresh(&host, "zrt_not-a-token").expect_error(401);
    host.post_json("/v1/auth/refresh", &json!({}))
        .expect_error(422);
}

/// With no reuse interval, any second presentation of a refresh token is
/// theft.
#[test]
fn without_a_reuse_interval_every_reuse_is_theft() {
    let host = Host::builder()
        .config("[auth]\nrefresh_reuse_interval_secs = 0\n")
        .start();
    let first = host.signup(&unique_email("eve"), PASSWORD);
    let second = Account::from(&refresh(&host, &first.refresh_token).json());
    let message = refresh(&host, &first.refresh_token).expect_error(401);
    assert!(message.contains("already used"), "{message}");
    get_as(&host, "/v1/whoami", &second.access_token).expect_error(401);
}

#[test]
fn a_switch_spends_the_refresh_token_and_keeps_the_family() {
    let host = Host::start();
    let switch = |token: &str| {
        post_as(
            &host,
            "/v1/auth/switch",
            token,
            &json!({ "environment": "live" }),
        )
    };
    // A stolen refresh token, refreshed and then switched away from: the
    // victim's next refresh ends the thief's switched session too.
    let victim = host.signup(&unique_email("ida"), PASSWORD);
    let thief = Account::from(&refresh(&host, &victim.refresh_token).json());
    let switched = switch(&thief.access_token);
    assert_eq!(switched.status, 200, "{}", switched.text());
    let switched = Account::from(&switched.json());
    assert_eq!(
        get_as(&host, "/v1/whoami", &switched.access_token).status,
        200
    );
    let message = refresh(&host, &victim.refresh_token).expect_error(401);
    assert!(message.contains("already used"), "{message}");
    get_as(&host, "/v1/whoami", &switched.access_token).expect_error(401);
    refresh(&host, &switched.refresh_token).expect_error(401);

    // A stolen access token switched: the switch spent the session's
    // refresh token, so presenting it ends the new session as well.
    let victim = host.signup(&unique_email("jo"), PASSWORD);
    let switched = Account::from(&switch(&victim.access_token).json());
    let message = refresh(&host, &victim.refresh_token).expect_error(401);
    assert!(message.contains("already used"), "{message}");
    get_as(&host, "/v1/whoami", &switched.access_token).expect_error(401);

    // Several switches with one token at once: one new session at most.
    let account = host.signup(&unique_email("kai"), PASSWORD);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| switch(&account.access_token).status))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 401].contains(s)),
        "{statuses:?}"
    );
}

#[test]
fn logout_ends_the_session_at_once() {
    let host = Host::start();
    let account = host.signup(&unique_email("eve"), PASSWORD);
    let other = login(&host, &account.email, PASSWORD);
    let other = Account::from(&other.json());
    let out = post_as(&host, "/v1/auth/logout", &account.access_token, &json!({}));
    assert_eq!(out.status, 204, "{}", out.text());
    let message = get_as(&host, "/v1/whoami", &account.access_token).expect_error(401);
    assert!(message.contains("session has ended"), "{message}");
    post_as(
        &host,
        "/v1/sql",
        &account.access_token,
        &json!({ "query": "select 1" }),
    )
    .expect_error(401);
    refresh(&host, &account.refresh_token).expect_error(401);
    // Only that session: another login of the same user still works.
    assert_eq!(get_as(&host, "/v1/whoami", &other.access_token).status, 200);
    host.request("POST", "/v1/auth/logout", &[], Vec::new())
        .expect_error(401);
}

#[test]
fn switching_environment_moves_to_separate_data() {
    let host = Host::start();
    let sandbox = host.signup(&unique_email("fay"), PASSWORD);
    let sql =
        |token: &str, query: &str| post_as(&host, "/v1/sql", token, &json!({ "query": query }));
    assert_eq!(
        sql(
            &sandbox.access_token,
            "CREATE TABLE only_in_sandbox (x int)"
        )
        .status,
        200
    );
    let sandbox_schema = sql(&sandbox.access_token, "SELECT current_schema() AS s").json()["rows"]
        [0]["s"]
        .as_str()
        .unwrap()
        .to_owned();

    let switched = post_as(
        &host,
        "/v1/auth/switch",
        &sandbox.access_token,
        &json!({ "environment": "live" }),
    );
    assert_eq!(switched.status, 200, "{}", switched.text());
    let live = Account::from(&switched.json());
    assert_eq!(live.environment, "live");
    assert_eq!(
        get_as(&host, "/v1/whoami", &live.access_token).json()["environment"],
        "live"
    );
    let environments = get_as(&host, "/v1/environments", &live.access_token).json();
    assert_eq!(
        environments["environments"][0],
        json!({ "name": "live", "current": true })
    );
    get_as(&host, "/v1/whoami", &sandbox.access_token).expect_error(401);

    sql(&live.access_token, "SELECT * FROM only_in_sandbox").expect_error(400);
    // Named with its schema, the sandbox's table is walled off by Postgres.
    let denied = sql(
        &live.access_token,
        &format!("SELECT * FROM \"{sandbox_schema}\".only_in_sandbox"),
    )
    .expect_error(403);
    assert!(
        denied.contains(&format!("permission denied for schema {sandbox_schema}")),
        "{denied}"
    );
    let back = post_as(
        &host,
        "/v1/auth/switch",
        &live.access_token,
        &json!({ "environment": "sandbox" }),
    );
    let back = Account::from(&back.json());
    assert_eq!(
        sql(&back.access_token, "SELECT * FROM only_in_sandbox").status,
        200
    );

    post_as(
        &host,
        "/v1/auth/switch",
        &back.access_token,
        &json!({ "environment": "prod" }),
    )
    .expect_error(422);
    post_as(&host, "/v1/auth/switch", &back.access_token, &json!({})).expect_error(422);
}

#[test]
fn tenants_do_not_see_each_other() {
    let host = Host::start();
    let a = host.signup(&unique_email("gus"), PASSWORD);
    let b = host.signup(&unique_email("hal"), PASSWORD);
    let sql =
        |token: &str, query: &str| post_as(&host, "/v1/sql", token, &json!({ "query": query }));
    assert_eq!(
        sql(
            &a.access_token,
            "CREATE TABLE secrets (s text); INSERT INTO secrets VALUES ('a')"
        )
        .status,
        200
    );
    let who = sql(
        &a.access_token,
        "SELECT current_schema() AS schema, current_user AS owner, session_user AS login",
    )
    .json()["rows"][0]
        .clone();
    let text = |key: &str| who[key].as_str().unwrap().to_owned();
    let (schema, owner, login) = (text("schema"), text("owner"), text("login"));
    // B's own search path does not hold A's table.
    let unqualified = sql(&b.access_token, "SELECT * FROM secrets").expect_error(400);
    assert!(unqualified.contains("does not exist"), "{unqualified}");
    // Every way B could name or become A is refused by Postgres, for the
    // reason named.
    let no_schema = format!("permission denied for schema {schema}");
    for (attack, status, says) in [
        (
            format!("SELECT * FROM \"{schema}\".secrets"),
            403,
            no_schema.clone(),
        ),
        (
            format!("INSERT INTO \"{schema}\".secrets VALUES ('b')"),
            403,
            no_schema.clone(),
        ),
        (
            format!("UPDATE \"{schema}\".secrets SET s = 'b'"),
            403,
            no_schema.clone(),
        ),
        (
            format!("DELETE FROM \"{schema}\".secrets"),
            403,
            no_schema.clone(),
        ),
        (
            format!("ALTER TABLE \"{schema}\".secrets ADD COLUMN y int"),
            403,
            no_schema.clone(),
        ),
        (
            format!("DROP TABLE \"{schema}\".secrets"),
            403,
            no_schema.clone(),
        ),
        (
            format!("CREATE TABLE \"{schema}\".planted (x int)"),
            403,
            no_schema.clone(),
        ),
        (
            format!(
                "CREATE FUNCTION \"{schema}\".planted() RETURNS int LANGUAGE sql AS 'SELECT 1'"
            ),
            403,
            no_schema.clone(),
        ),
        (
            format!("RESET ROLE; SELECT * FROM \"{schema}\".secrets"),
            403,
            no_schema.clone(),
        ),
        // A schema the role may not use is skipped in the search path.
        (
            format!("SET search_path = \"{schema}\"; SELECT * FROM secrets"),
            400,
            "relation \"secrets\" does not exist".to_owned(),
        ),
        (
            format!("SET ROLE \"{owner}\""),
            403,
            format!("permission denied to set role \"{owner}\""),
        ),
        (
            format!("SET SESSION AUTHORIZATION \"{login}\""),
            403,
            "permission denied to set session authorization".to_owned(),
        ),
        (
            format!("GRANT \"{owner}\" TO CURRENT_USER"),
            403,
            format!("permission denied to grant role \"{owner}\""),
        ),
    ] {
        let message = sql(&b.access_token, &attack).expect_error(status);
        assert!(message.contains(&says), "{attack}: {message}");
    }
    // A's table is as A left it: its one column, its one row, nothing added.
    let mine = sql(&a.access_token, "SELECT * FROM secrets").json();
    assert_eq!(mine["rows"], json!([{ "s": "a" }]));
    let planted = sql(
        &a.access_token,
        "SELECT to_regclass('planted') IS NULL AS no_table, \
         NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'planted') AS no_function",
    )
    .json();
    assert_eq!(
        planted["rows"],
        json!([{ "no_table": true, "no_function": true }])
    );
}

/// Claims a token of this host would carry, for `account`'s session.
fn claims(host: &Host, account: &Account) -> Value {
    let me = get_as(host, "/v1/whoami", &account.access_token).json();
    json!({
        "sub": me["user_id"], "sid": me["session_id"], "org": me["organization_id"],
        "prj": me["project_id"], "env": me["environment"],
        "iat": now(), "exp": now() + 600, "iss": "zatabase", "aud": "zatabase-api",
    })
}

fn sign(claims: &Value, key: &[u8], kid: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key)).unwrap()
}

/// A token with any header, HMAC-signed with `key`.
fn forge(header: &Value, claims: &Value, key: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(key),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

#[test]
fn forged_expired_and_foreign_tokens_fail_closed() {
    let host = Host::builder()
        .config(&format!("[auth]\nsigning_key = \"{KEY_HEX}\"\n"))
        .start();
    let key = hex_decode(KEY_HEX);
    let account = host.signup(&unique_email("ivy"), PASSWORD);
    let good = claims(&host, &account);
    // The harness's own signing works: the key is the host's.
    assert_eq!(
        get_as(&host, "/v1/whoami", &sign(&good, &key, "k1")).status,
        200
    );

    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        claims
    };
    let none_header = json!({ "alg": "none", "typ": "JWT" });
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(none_header.to_string()),
                URL_SAFE_NO_PAD.encode(good.to_string())
            ),
        ),
        (
            "another key",
            sign(&good, b"0123456789abcdef0123456789abcdef", "k1"),
        ),
        (
            "RS256 header, HMAC signature",
            forge(
                &json!({ "alg": "RS256", "typ": "JWT", "kid": "k1" }),
                &good,
                &key,
            ),
        ),
        ("unknown kid", sign(&good, &key, "k9")),
        (
            "no kid",
            forge(&json!({ "alg": "HS256", "typ": "JWT" }), &good, &key),
        ),
        (
            "expired",
            sign(&with("exp", json!(now() - 120)), &key, "k1"),
        ),
        (
            "not yet valid",
            sign(&with("nbf", json!(now() + 3600)), &key, "k1"),
        ),
        (
            "wrong audience",
            sign(&with("aud", json!("someone-else")), &key, "k1"),
        ),
        (
            "wrong issuer",
            sign(&with("iss", json!("evil")), &key, "k1"),
        ),
        (
            "no such session",
            sign(
                &with("sid", json!("6f1c1a4e-0000-4000-8000-000000000001")),
                &key,
                "k1",
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
        ("tampered payload", {
            let real = sign(&good, &key, "k1");
            let parts: Vec<&str> = real.split('.').collect();
            let tampered = with("env", json!("live"));
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(tampered.to_string()),
                parts[2]
            )
        }),
    ];
    for (what, token) in &cases {
        for path in ["/v1/whoami", "/v1/environments"] {
            let response = get_as(&host, path, token);
            response.expect_error(401);
            assert!(
                response.header("www-authenticate").is_some(),
                "{what}: no challenge"
            );
        }
        post_as(&host, "/v1/sql", token, &json!({ "query": "select 1" })).expect_error(401);
    }
    for header in [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer",
        "Token abc",
    ] {
        host.request(
            "GET",
            "/v1/whoami",
            &[("authorization", header)],
            Vec::new(),
        )
        .expect_error(401);
    }
    let missing = host.get("/v1/whoami");
    let message = missing.expect_error(401);
    assert!(message.contains("authentication required"), "{message}");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    // A logged-out session's token, even well signed, is dead.
    post_as(&host, "/v1/auth/logout", &account.access_token, &json!({}));
    get_as(&host, "/v1/whoami", &sign(&good, &key, "k1")).expect_error(401);
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A login from `client` (behind a trusted proxy on loopback).
fn login_from(host: &Host, client: &str, email: &str, password: &str) -> zatabase_tests::Resp {
    host.request(
        "POST",
        "/v1/auth/login",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", client),
        ],
        serde_json::to_vec(&json!({ "email": email, "password": password })).unwrap(),
    )
}

#[test]
fn repeated_failed_logins_are_throttled() {
    let host = Host::builder()
        .config(
            "[auth]\nmax_failed_logins_per_account = 3\nmax_failed_logins_per_ip = 6\n\
             [http]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        )
        .start();
    let email = unique_email("jay");
    host.signup(&email, PASSWORD);
    for _ in 0..3 {
        login(&host, &email, "wrong password").expect_error(401);
    }
    let throttled = login(&host, &email, PASSWORD);
    let message = throttled.expect_error(429);
    assert!(message.contains("too many login attempts"), "{message}");
    assert!(
        throttled
            .header("retry-after")
            .is_some_and(|s| s.parse::<u32>().unwrap() > 0)
    );
    // The guesses locked the account for the address they came from, not
    // for its owner's.
    assert_eq!(
        login_from(&host, "198.51.100.20", &email, PASSWORD).status,
        200
    );

    // Another account from the same address is fine, until the address has
    // failed too often.
    let other = unique_email("kim");
    host.signup(&other, PASSWORD);
    assert_eq!(login(&host, &other, PASSWORD).status, 200);
    for _ in 0..3 {
        login(&host, &unique_email("ghost"), "whatever password").expect_error(401);
    }
    login(&host, &other, PASSWORD).expect_error(429);
}

/// Every login and signup costs a password hash: past
/// `auth.max_password_checks_per_ip` from one address in the window, even
/// successful ones, it is refused (429) before hashing, and a refused
/// signup stores nothing.
#[test]
fn an_address_has_only_so_many_password_checks() {
    let host = Host::builder()
        .config(
            "[auth]\nmax_password_checks_per_ip = 3\n\
             [http]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        )
        .start();
    let email = unique_email("nia");
    host.signup(&email, PASSWORD);
    for _ in 0..2 {
        assert_eq!(login(&host, &email, PASSWORD).status, 200);
    }
    let refused = login(&host, &email, PASSWORD);
    refused.expect_error(429);
    assert!(refused.header("retry-after").is_some());
    let late = unique_email("ola");
    let signup = host.post_json(
        "/v1/auth/signup",
        &json!({ "email": late, "password": PASSWORD }),
    );
    let message = signup.expect_error(429);
    assert!(message.contains("too many signups and logins"), "{message}");
    assert_eq!(
        host.platform_sql(&format!(
            "SELECT count(*) FROM zatabase.users WHERE email = '{late}'"
        )),
        "0"
    );
    // Another address has its own.
    assert_eq!(
        login_from(&host, "198.51.100.21", &email, PASSWORD).status,
        200
    );
}

#[test]
fn concurrent_guesses_cannot_pass_the_login_limit() {
    let host = Host::builder()
        .config("[auth]\nmax_failed_logins_per_account = 3\n")
        .start();
    let email = unique_email("lee");
    host.signup(&email, PASSWORD);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..12)
            .map(|n| {
                let (host, email) = (&host, &email);
                scope.spawn(move || login(host, email, &format!("guess number {n}")).status)
            })
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(checked, 3, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    login(&host, &email, PASSWORD).expect_error(429);
    // An "email" of a megabyte is refused like any unknown one.
    login(&host, &"e".repeat(1 << 20), PASSWORD).expect_error(401);
}

#[test]
fn a_login_hashes_again_a_password_hashed_with_older_parameters() {
    let mut host = Host::start();
    let email = unique_email("max");
    host.signup(&email, PASSWORD);
    let stored = |host: &Host| {
        host.platform_sql(&format!(
            "SELECT password_hash FROM zatabase.users WHERE email = '{email}'"
        ))
    };
    let before = stored(&host);
    assert!(before.contains("m=19456,t=2,p=1"), "{before}");
    host.keep_data();
    let data_dir = host.data_dir.clone();
    drop(host);

    // The operator raises the cost: the next login stores a hash of it.
    let again = Host::builder()
        .data_dir(&data_dir)
        .config("[auth]\nargon2_memory_kib = 8192\nargon2_iterations = 3\n")
        .start();
    login(&again, &email, "a wrong password").expect_error(401);
    assert_eq!(stored(&again), before, "a failed login changes nothing");
    assert_eq!(login(&again, &email, PASSWORD).status, 200);
    let after = stored(&again);
    assert!(after.contains("m=8192,t=3,p=1"), "{after}");
    assert_eq!(login(&again, &email, PASSWORD).status, 200);
    drop(again);
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap());
}

#[test]
fn passwords_and_tokens_never_reach_the_log() {
    let host = Host::builder().env("RUST_LOG", "trace").start();
    let secret_password = "zebra-cadmium-quartz-7731";
    let email = unique_email("lou");
    let account = host.signup(&email, secret_password);
    login(&host, &email, "wrong-ostrich-password-5512").expect_error(401);
    let again = Account::from(&login(&host, &email, secret_password).json());
    let rotated = Account::from(&refresh(&host, &again.refresh_token).json());
    post_as(
        &host,
        "/v1/sql",
        &rotated.access_token,
        &json!({ "query": "select $1::text", "params": ["harmless"] }),
    );
    get_as(&host, "/v1/whoami", &account.access_token);
    let log = host.log();
    // Written at trace level, the SQL request included.
    assert!(
        log.contains(" TRACE ") && log.contains("group=\"sql\""),
        "the trace log was written: {log}"
    );
    for (what, secret) in [
        ("password", secret_password),
        ("wrong password", "wrong-ostrich-password-5512"),
        ("access token", account.access_token.as_str()),
        ("access token (login)", again.access_token.as_str()),
        ("refresh token", again.refresh_token.as_str()),
        ("rotated refresh token", rotated.refresh_token.as_str()),
    ] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "the {what} is in the log");
    }
    assert!(!log.contains("$argon2id$"), "a password hash is in the log");
}

#[test]
fn every_route_group_but_the_public_ones_needs_a_token() {
    let host = Host::start();
    host.post_json("/v1/sql", &json!({ "query": "select 1" }))
        .expect_error(401);
    host.get("/v1/whoami").expect_error(401);
    host.get("/v1/environments").expect_error(401);
    host.get("/v1/permissions").expect_error(401);
    host.request(
        "PUT",
        "/v1/permissions",
        &[("content-type", "application/json")],
        b"{}".to_vec(),
    )
    .expect_error(401);
    host.post_json("/v1/auth/switch", &json!({ "environment": "live" }))
        .expect_error(401);
    // Public: these answer on their own terms, not with 401.
    assert_eq!(host.post_json("/v1/auth/login", &json!({})).status, 422);
    assert_eq!(host.post_json("/v1/auth/signup", &json!({})).status, 422);
    assert_eq!(host.post_json("/v1/auth/refresh", &json!({})).status, 422);
    assert_eq!(host.get("/health").status, 200);
    assert_eq!(host.get("/metrics").status, 200);
    assert_eq!(host.get("/v1/openapi.json").status, 200);
}
