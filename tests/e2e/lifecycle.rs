//! Start, stop, restart, kill: the host and its embedded Postgres.

use std::time::Duration;

use rustix::process::Signal;
use serde_json::json;
use zatabase_tests::{Host, alive, eventually};

#[test]
fn a_fresh_data_directory_gets_a_cluster_and_a_restart_reuses_it() {
    let mut host = Host::builder().fresh_cluster().start();
    assert!(
        host.log().contains("initialising the Postgres cluster"),
        "{}",
        host.log()
    );
    assert_eq!(host.get("/health/ready").status, 200);
    host.sql_ok("CREATE TABLE kept (id int primary key, note text)", &[]);
    host.sql_ok("INSERT INTO kept VALUES (1, 'before restart')", &[]);
    host.keep_data();
    let token = host.token();
    let postgres = host.postgres_pid().expect("a running cluster");
    assert!(host.stop().success(), "SIGTERM exits 0");
    assert!(!alive(postgres), "SIGTERM stops Postgres too");

    let data_dir = host.data_dir.clone();
    drop(host);
    let mut again = Host::builder().data_dir(&data_dir).start();
    again.use_token(&token);
    let log = again.log();
    assert_eq!(
        log.matches("initialising the Postgres cluster").count(),
        1,
        "the second start reuses the cluster:\n{log}"
    );
    assert!(
        log.contains("component loaded component=\"sql\" cached=true"),
        "the second start loads the compiled component from the cache:\n{log}"
    );
    let rows = again.sql_ok("SELECT note FROM kept", &[]);
    assert_eq!(rows["rows"], json!([{ "note": "before restart" }]));
    assert!(again.stop().success());
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap());
}

/// With `http.shutdown_delay_secs`, a stopping host answers readiness 503
/// at once and serves on (new connections included) for the delay, so a
/// load balancer stops sending before the listener closes.
#[test]
fn a_stopping_host_says_it_is_not_ready_and_serves_on_for_its_delay() {
    let mut host = Host::builder()
        .config("[http]\nshutdown_delay_secs = 3\n")
        .start();
    assert_eq!(host.get("/health/ready").status, 200);
    let token = host.token();
    let told = std::time::Instant::now();
    rustix::process::kill_process(host.pid(), Signal::TERM).unwrap();
    let mut ready = host.get("/health/ready");
    while ready.status == 200 && told.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
        ready = host.get("/health/ready");
    }
    assert!(
        ready.expect_error(503).contains("stopping"),
        "{}",
        ready.text()
    );
    assert_eq!(ready.json()["checks"]["shutdown"]["status"], "draining");
    // Still served, on new connections too, within the delay.
    assert_eq!(host.get("/health").status, 200);
    assert_eq!(host.call("GET", "/v1/whoami", &token, None).status, 200);
    assert!(host.stop().success());
    assert!(
        told.elapsed() >= Duration::from_secs(3),
        "it served out its delay"
    );
    assert!(host.log().contains("not ready from now on"));
}

#[test]
fn sigint_drains_and_exits_zero() {
    let mut host = Host::start();
    let postgres = host.postgres_pid().unwrap();
    assert!(host.stop_with(Signal::INT).success());
    assert!(!alive(postgres));
}

/// `POST /v1/sql` of `query` on a thread of its own: its status and body,
/// or the transport's error.
fn sql_in_the_background(
    host: &Host,
    query: &str,
) -> std::thread::JoinHandle<Result<(u16, String), ureq::Error>> {
    let url = host.url("/v1/sql");
    let bearer = format!("Bearer {}", host.token());
    let body = json!({ "query": query }).to_string();
    std::thread::spawn(move || {
        ureq::post(&url)
            .header("content-type", "application/json")
            .header("authorization", &bearer)
            .send(&body)
            .map(|mut r| {
                (
                    r.status().as_u16(),
                    r.body_mut().read_to_string().unwrap_or_default(),
                )
            })
    })
}

#[test]
fn in_flight_requests_finish_during_a_graceful_stop() {
    let mut host = Host::start();
    let slow = sql_in_the_background(&host, "SELECT 'yes' AS slept FROM pg_sleep(1.5)");
    std::thread::sleep(Duration::from_millis(400));
    assert!(host.stop().success());
    let (status, body) = slow
        .join()
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""slept":"yes""#), "{body}");
}

/// Past the grace period a stop cuts what is still running: the client's
/// connection is closed without an answer, and only then is Postgres
/// stopped (before, the request went on and answered with the error of
/// a Postgres stopped under it).
#[test]
fn a_request_still_running_past_the_grace_period_is_cut() {
    let mut host = Host::builder()
        .config("[http]\nshutdown_grace_secs = 1\n")
        .start();
    let slow = sql_in_the_background(&host, "SELECT pg_sleep(8)");
    std::thread::sleep(Duration::from_millis(400));
    let stopping = std::time::Instant::now();
    assert!(host.stop().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(7),
        "the stop waited for the statement: {:?}",
        stopping.elapsed()
    );
    let answered = slow.join().unwrap();
    assert!(
        answered.is_err(),
        "answered after the grace period: {answered:?}"
    );
    let log = host.log();
    let cut = log.find("guest runs were cut").expect("the cut is logged");
    let stopped = log.find("Postgres stopped").expect("Postgres is stopped");
    assert!(cut < stopped, "Postgres stopped before the cut:\n{log}");
}

#[test]
fn sigkill_takes_postgres_down_and_the_next_start_recovers_every_committed_row() {
    let mut host = Host::start();
    host.sql_ok("CREATE TABLE ledger (n int)", &[]);
    host.sql_ok("INSERT INTO ledger SELECT generate_series(1, 500)", &[]);
    host.sql_ok("INSERT INTO ledger VALUES ($1)", &[json!(501)]);
    host.keep_data();
    let token = host.token();
    let postgres = host.postgres_pid().unwrap();
    host.stop_with(Signal::KILL);
    assert!(
        eventually(Duration::from_secs(30), || !alive(postgres)),
        "Postgres outlived its SIGKILLed host"
    );

    let data_dir = host.data_dir.clone();
    drop(host);
    let again = Host::builder().data_dir(&data_dir).start();
    again.use_token(&token);
    assert_eq!(again.get("/health/ready").status, 200);
    let count = again.sql_ok("SELECT count(*) AS n, max(n) AS top FROM ledger", &[]);
    assert_eq!(count["rows"], json!([{ "n": 501, "top": 501 }]));
    drop(again);
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap());
}

#[test]
fn a_postgres_that_dies_is_reported_down_and_started_again() {
    let mut host = Host::start();
    host.token();
    host.sql_ok("CREATE TABLE kept (n int)", &[]);
    host.sql_ok("INSERT INTO kept VALUES (1)", &[]);
    let ready = host.get("/health/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["postgres"]["status"], "up");
    assert_eq!(ready.json()["checks"]["components"]["loaded"], 5);

    // A Postgres that answers nothing (every process of it stopped) is
    // reported down; readiness looks at most once a second.
    let postgres = host.postgres_pid().unwrap();
    let signal_all = |signal: Signal| {
        for pid in cluster_processes(postgres) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    };
    signal_all(Signal::STOP);
    let reported = eventually(Duration::from_secs(10), || {
        host.get("/health/ready").status == 503
    });
    let down = host.get("/health/ready");
    signal_all(Signal::CONT);
    assert!(reported, "readiness never reported the stopped Postgres");
    let message = down.expect_error(503);
    assert!(message.contains("postgres"), "{message}");
    assert_eq!(down.json()["checks"]["postgres"]["status"], "down");
    assert_eq!(host.get("/health").status, 200, "liveness is not readiness");
    assert!(eventually(Duration::from_secs(10), || host
        .get("/health/ready")
        .status
        == 200));

    // A Postgres that dies is started again by the host.
    rustix::process::kill_process(postgres, Signal::KILL).unwrap();
    assert!(eventually(Duration::from_secs(10), || !alive(postgres)));
    // Started again by the host, with every committed row.
    assert!(
        eventually(Duration::from_secs(20), || {
            host.postgres_pid()
                .is_some_and(|pid| pid != postgres && alive(pid))
        }),
        "{}",
        host.log()
    );
    assert!(eventually(Duration::from_secs(10), || host
        .get("/health/ready")
        .status
        == 200));
    assert!(
        host.log().contains("Postgres exited; starting it again"),
        "{}",
        host.log()
    );
    assert!(eventually(Duration::from_secs(10), || {
        host.sql("SELECT count(*) AS n FROM kept", &[]).status == 200
    }));
    assert_eq!(
        host.sql_ok("SELECT count(*) AS n FROM kept", &[])["rows"],
        json!([{ "n": 1 }])
    );
    assert!(host.stop().success());
}

#[test]
fn a_second_host_cannot_share_a_data_directory() {
    let host = Host::start();
    let refused = Host::builder().data_dir(&host.data_dir).try_start();
    let log = refused.err().expect("the second host must not start");
    assert!(
        log.contains("another zatabase is using the data directory"),
        "{log}"
    );
    assert_eq!(
        host.get("/health/ready").status,
        200,
        "the first host is unharmed"
    );
}

/// A postmaster and its children (each in a session of its own, so not
/// reached through the postmaster's process group).
fn cluster_processes(postmaster: rustix::process::Pid) -> Vec<rustix::process::Pid> {
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent is the 2nd field after the command name.
        let parent = stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(1);
        if parent == Some(&postmaster.as_raw_nonzero().to_string()) {
            let pid = entry.file_name().to_string_lossy().parse().ok();
            pids.extend(pid.and_then(rustix::process::Pid::from_raw));
        }
    }
    pids
}

/// The scheduling policy (0 normal, 3 batch) and nice value of a process,
/// from `/proc/<pid>/stat`.
fn scheduling(pid: &str) -> (u32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name: state is the 3rd field of the
    // line, nice the 19th, policy the 41st.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (fields[38].parse().unwrap(), fields[16].parse().unwrap())
}

#[test]
fn the_hosts_backends_run_as_batch_work_and_its_writer_at_the_lowest_priority() {
    let host = Host::start();
    host.sql_ok("SELECT 1", &[]);
    let backend = |application: &str| {
        host.platform_sql(&format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{application}' LIMIT 1"
        ))
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            !backend("zatabase-background").is_empty()
        }),
        "the telemetry writer never connected"
    );
    const BATCH: u32 = 3;
    assert_eq!(scheduling(&backend("zatabase-background")), (BATCH, 19));
    assert_eq!(scheduling(&backend("zatabase")), (BATCH, 0));
    assert_eq!(scheduling(&backend("zatabase-tenant")), (BATCH, 0));
    // Postgres itself, and so any other client's backend, as it started.
    let pid_file = std::fs::read_to_string(host.data_dir.join("postgres/postmaster.pid")).unwrap();
    let postmaster = pid_file.lines().next().unwrap();
    assert_eq!(scheduling(postmaster), (0, 0));
}

#[test]
fn a_cluster_is_created_whole_and_never_made_room_for() {
    let data_dir = zatabase_tests::scratch().join("data");
    // Something that is not a cluster where the cluster goes: the host
    // stops rather than removing it.
    let pgdata = data_dir.join("postgres");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("stray"), "keep me").unwrap();
    let refused = Host::builder().data_dir(&data_dir).try_start();
    let log = refused.err().expect("the host must not start");
    assert!(log.contains("holds no Postgres cluster"), "{log}");
    assert_eq!(
        std::fs::read_to_string(pgdata.join("stray")).unwrap(),
        "keep me"
    );

    // What an initdb that was killed midway left is cleared, and the new
    // cluster takes its place only once whole.
    std::fs::remove_dir_all(&pgdata).unwrap();
    let building = data_dir.join("postgres.init");
    std::fs::create_dir_all(&building).unwrap();
    std::fs::write(building.join("PG_VERSION"), "18\n").unwrap();
    let host = Host::builder().data_dir(&data_dir).start();
    assert!(!building.exists());
    assert!(pgdata.join("PG_VERSION").exists());
    assert_eq!(
        host.sql_ok("SELECT 1 AS one", &[])["rows"],
        json!([{ "one": 1 }])
    );
}

/// Only as root does the host run Postgres as another user and hand it the
/// cluster; that hand-over must not follow a link the Postgres user
/// planted in it.
#[test]
fn postgres_gets_its_cluster_but_not_what_a_link_in_it_names() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut host = Host::start();
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: the host runs Postgres as itself; nothing is handed over");
        return;
    }
    host.keep_data();
    let data_dir = host.data_dir.clone();
    let pgdata = data_dir.join("postgres");
    let postgres_uid = std::fs::metadata(pgdata.join("PG_VERSION")).unwrap().uid();
    assert_ne!(postgres_uid, 0);
    // Root's files, and links to them where the Postgres user can write.
    let secret = data_dir.parent().unwrap().join("root-only");
    std::fs::create_dir_all(secret.join("dir")).unwrap();
    std::fs::write(secret.join("file"), "root's").unwrap();
    std::os::unix::fs::symlink(secret.join("file"), pgdata.join("planted-file")).unwrap();
    std::os::unix::fs::symlink(secret.join("dir"), pgdata.join("planted-dir")).unwrap();
    // Postgres's log: the host's user alone reads it, and a failing
    // statement's text is not in it.
    host.sql("SELECT 'statement-marker' FROM no_such_table", &[])
        .expect_error(400);
    assert!(host.stop().success());
    drop(host);

    let again = Host::builder().data_dir(&data_dir).start();
    for root_owned in [secret.join("file"), secret.join("dir")] {
        assert_eq!(
            std::fs::metadata(&root_owned).unwrap().uid(),
            0,
            "{}",
            root_owned.display()
        );
    }
    let link = std::fs::symlink_metadata(pgdata.join("planted-file")).unwrap();
    assert_eq!(link.uid(), postgres_uid, "the link itself is handed over");
    let log = data_dir.join("postgres.log");
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("no_such_table"),
        "the error is logged:\n{text}"
    );
    assert!(
        !text.contains("statement-marker"),
        "the statement is not:\n{text}"
    );
    drop(again);
    std::fs::remove_dir_all(secret).unwrap();
}

#[test]
fn a_database_refuses_a_master_key_other_than_its_own() {
    let mut host = Host::start();
    host.keep_data();
    assert!(host.stop().success());
    let data_dir = host.data_dir.clone();
    drop(host);
    // A data directory restored without its key gets a new one made: the
    // database was set up with the old.
    let key = data_dir.join("master.key");
    let original = std::fs::read_to_string(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let refused = Host::builder().data_dir(&data_dir).try_start();
    let log = refused
        .err()
        .expect("the host must not start with another key");
    assert!(log.contains("set up with another master key"), "{log}");
    let refused = Host::builder()
        .data_dir(&data_dir)
        .env("ZATABASE_MASTER_KEY", &"ab".repeat(32))
        .try_start();
    assert!(refused.is_err(), "nor with another key given");
    std::fs::write(&key, original).unwrap();
    let again = Host::builder().data_dir(&data_dir).start();
    assert_eq!(again.get("/health/ready").status, 200);
}

/// `[features]` turns a route group off (its routes are absent: 404), and a
/// flag no route group sits behind is refused at start rather than leave on
/// what its misspelling meant to turn off.
#[test]
fn features_turn_route_groups_off_and_unknown_ones_are_refused() {
    let host = Host::builder().config("[features]\nzql = false\n").start();
    host.token();
    let zql = host.authed(
        "POST",
        "/api/zql/query",
        &[("content-type", "application/json")],
        br#"{"query":"FROM things"}"#.to_vec(),
    );
    assert_eq!(zql.status, 404, "{}", zql.text());
    host.sql_ok("SELECT 1", &[]);

    let refused = Host::builder()
        .config("[features]\nfunction = false\n")
        .try_start()
        .err()
        .expect("a misspelt feature must not start");
    assert!(
        refused.contains("`function`") && refused.contains("functions"),
        "{refused}"
    );
}

/// The embedded server reserves the platform's connections: busy tenants
/// share what is left (here 40 − 3 for superusers − 13 for the platform −
/// those the platform holds of the rest, about 6: about 18), past which a
/// tenant's new connection is a 503 saying so, unless another tenant has
/// one idle to give up, and the platform serves on.
/// Without the reservation all 24 of six tenants' sleeps would fit.
#[test]
fn busy_tenants_cannot_take_the_platforms_connections() {
    let host = Host::builder()
        .config(
            "[postgres]\nmax_connections = 40\n\
             [pool]\nmax_connections = 10\ntenant_max_connections = 4\n",
        )
        .start();
    assert_eq!(host.platform_sql("SHOW reserved_connections"), "13");
    let tenants: Vec<String> = (0..6)
        .map(|_| {
            host.signup(
                &zatabase_tests::unique_email("busy"),
                "a long test password",
            )
            .access_token
        })
        .collect();
    let url = host.url("/v1/sql");
    let sleeps: Vec<_> = tenants
        .iter()
        .flat_map(|token| std::iter::repeat_n(token.clone(), 4))
        .map(|token| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut answer = ureq::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", &format!("Bearer {token}"))
                    .config()
                    .http_status_as_error(false)
                    .build()
                    .send(&json!({ "query": "SELECT pg_sleep(2)" }).to_string())
                    .unwrap();
                (
                    answer.status().as_u16(),
                    answer.body_mut().read_to_string().unwrap(),
                )
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = sleeps.into_iter().map(|t| t.join().unwrap()).collect();
    let served = answers.iter().filter(|(status, _)| *status == 200).count();
    // At least one tenant's share (the start check leaves it), not all.
    assert!((4..24).contains(&served), "{served} served: {answers:?}");
    for (status, body) in &answers {
        assert!(
            *status == 200 || (*status == 503 && body.contains("no connection free")),
            "{answers:?}"
        );
    }
    // The platform, meanwhile and after, is whole; and a new tenant, which
    // the others' idle connections left no slot, has one of theirs.
    let other = host.signup(
        &zatabase_tests::unique_email("after"),
        "a long test password",
    );
    host.use_token(&other.access_token);
    assert_eq!(host.sql_ok("SELECT 1 AS one", &[])["rows"][0]["one"], 1);
}
