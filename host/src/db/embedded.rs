//! The embedded Postgres: initialised on first start, run as a child of the
//! host on a Unix socket in the data directory, stopped with the host.
//!
//! Never an orphan: the postmaster is spawned from a supervisor thread that
//! lives as long as the host, with a parent-death signal (SIGINT, Postgres's
//! fast shutdown), so even a SIGKILLed host takes its Postgres down; the next
//! start recovers the cluster from its WAL. A Postgres that dies while the
//! host runs (a crash, the OOM killer) is started again by the supervisor,
//! after a wait that grows while it keeps dying; the host's pools
//! reconnect. Postgres refuses to run as root:
//! a root host runs it as an unprivileged user (`nobody` by default) and
//! gives that user the cluster's directory. The backends of the host's own
//! connections are scheduled as batch work ([`schedule_backend`]).

#![allow(unsafe_code)] // `pre_exec` (see `spawn`) and `sched_setscheduler` (see `schedule_backend`).

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use super::install::{self, Installation};

/// The platform's superuser in the embedded cluster.
pub const SUPERUSER: &str = "zatabase";
/// The database the platform uses in the embedded cluster.
pub const DATABASE: &str = "zatabase";

/// Settings of the embedded cluster.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub install_dir: PathBuf,
    pub port: u16,
    /// Off only for throwaway clusters (tests): a crash can lose committed data.
    pub fsync: bool,
    pub max_connections: u32,
    /// Of them, those only the platform (a superuser) may take, beside
    /// Postgres's three for superusers: however many tenants are busy,
    /// the platform can still open its pool and its own connections.
    pub reserved_connections: u32,
    pub shared_buffers: String,
    /// The user to run Postgres as when the host is root.
    pub run_as: String,
    pub start_timeout: Duration,
}

/// Who Postgres runs as.
#[derive(Debug, Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

/// A running embedded Postgres.
pub struct Embedded {
    child: Arc<Child>,
    exited: mpsc::Receiver<std::io::Result<ExitStatus>>,
    socket_dir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Embedded {
    /// Installs the binaries if needed, initialises the cluster on first use,
    /// starts Postgres and waits until it accepts connections.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let installation = install::ensure(&config.install_dir).await?;
        let account = account(config)?;
        let pgdata = config.data_dir.join("postgres");
        let log = config.data_dir.join("postgres.log");
        if !initialised(&pgdata)? {
            initdb(&installation, &pgdata, account, config.fsync, &log)?;
        } else if let Some(account) = account {
            give(&pgdata, account)?;
        }
        let socket_dir = socket_dir(&pgdata, config.port, account)?;
        clear_stale_pid(&pgdata).await?;

        let mut args: Vec<std::ffi::OsString> = vec![
            "-D".into(),
            pgdata.clone().into(),
            "-k".into(),
            socket_dir.clone().into(),
            "-p".into(),
            config.port.to_string().into(),
        ];
        for (name, value) in [
            ("listen_addresses", String::new()),
            ("unix_socket_permissions", "0700".to_owned()),
            ("fsync", on_off(config.fsync)),
            ("full_page_writes", on_off(config.fsync)),
            ("max_connections", config.max_connections.to_string()),
            (
                "reserved_connections",
                config.reserved_connections.to_string(),
            ),
            ("shared_buffers", config.shared_buffers.clone()),
            ("logging_collector", "off".to_owned()),
            ("log_min_messages", "warning".to_owned()),
            // A failing statement's text is the client's business, and the
            // client has it: in the server's log a tenant could fill the
            // disk with it, 10 MB a request.
            ("log_min_error_statement", "panic".to_owned()),
            ("huge_pages", "off".to_owned()),
        ] {
            args.push("-c".into());
            args.push(format!("{name}={value}").into());
        }
        let postgres = installation.bin("postgres");
        let make = move || {
            let mut command = Command::new(&postgres);
            command.args(&args);
            command
        };
        let (child, exited) = spawn(Box::new(make), account, &log, Some(pgdata))?;
        let embedded = Self {
            child,
            exited,
            socket_dir,
            port: config.port,
            log,
        };
        embedded.wait_ready(config.start_timeout).await?;
        embedded.create_database().await?;
        // From here on, a Postgres that dies is started again.
        embedded.child.lock().restart = true;
        Ok(embedded)
    }

    /// Options reaching the platform database over the socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(self.port)
            .username(SUPERUSER)
            .database(DATABASE)
    }

    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let options = self.connect_options().database("postgres");
        loop {
            if let Ok(status) = self.exited.try_recv() {
                bail!(
                    "Postgres exited during start-up ({}); its log, {}, ends with:\n{}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    self.log.display(),
                    tail(&self.log)
                );
            }
            match options.connect().await {
                Ok(conn) => {
                    let _ = sqlx::Connection::close(conn).await;
                    return Ok(());
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => bail!(
                    "Postgres did not accept connections within {timeout:?} ({e}); see {}",
                    self.log.display()
                ),
            }
        }
    }

    async fn create_database(&self) -> anyhow::Result<()> {
        let mut conn = self
            .connect_options()
            .database("postgres")
            .connect()
            .await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(DATABASE)
                .fetch_optional(&mut conn)
                .await?;
        if exists.is_none() {
            sqlx::Executor::execute(&mut conn, "CREATE DATABASE zatabase").await?;
        }
        Ok(())
    }

    /// Stops Postgres: fast shutdown, then immediate shutdown if it hangs.
    pub async fn stop(self) -> anyhow::Result<()> {
        {
            let mut running = self.child.lock();
            running.stopping = true;
            running.signal(Signal::INT);
            self.child.changed.notify_all();
        }
        let exited = self.exited;
        let waited = tokio::task::spawn_blocking(move || {
            exited
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| exited)
        })
        .await?;
        if let Err(exited) = waited {
            tracing::warn!("Postgres did not stop within 60 s; forcing an immediate shutdown");
            self.child.lock().signal(Signal::QUIT);
            let _ =
                tokio::task::spawn_blocking(move || exited.recv_timeout(Duration::from_secs(10)))
                    .await;
        }
        Ok(())
    }
}

fn on_off(on: bool) -> String {
    if on { "on" } else { "off" }.to_owned()
}

/// The account to run Postgres as: `None` to keep the host's own.
fn account(config: &Config) -> anyhow::Result<Option<Account>> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == config.run_as {
            let uid = fields[2].parse().context("bad uid in /etc/passwd")?;
            let gid = fields[3].parse().context("bad gid in /etc/passwd")?;
            if uid == 0 {
                bail!("Postgres cannot run as `{}`: it is root", config.run_as);
            }
            return Ok(Some(Account { uid, gid }));
        }
    }
    bail!(
        "the host runs as root and Postgres refuses root; the user `{}` to run it as does not \
         exist (set postgres.run_as in the config file)",
        config.run_as
    )
}

/// Hands the directory tree at `dir` to `account`. The tree is walked
/// through directory descriptors, never following a symbolic link: the
/// Postgres user can write in it, and a link it planted (to `/etc/shadow`,
/// say) must not make root hand over what the link names.
fn give(dir: &Path, account: Account) -> anyhow::Result<()> {
    use rustix::fs::{CWD, Mode, OFlags};
    let owner = Some(rustix::process::Uid::from_raw(account.uid));
    let group = Some(rustix::process::Gid::from_raw(account.gid));
    let directory = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let giving = |path: &Path| format!("giving {} to the Postgres user", path.display());
    let top =
        rustix::fs::openat(CWD, dir, directory, Mode::empty()).with_context(|| giving(dir))?;
    rustix::fs::fchown(&top, owner, group).with_context(|| giving(dir))?;
    let mut stack = vec![(top, dir.to_path_buf())];
    while let Some((fd, path)) = stack.pop() {
        for entry in rustix::fs::Dir::read_from(&fd).with_context(|| giving(&path))? {
            let entry = entry.with_context(|| giving(&path))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            // The entry itself, never what a link names (and a file system
            // without types in its listings tells the type here).
            let found = rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| giving(&child))?;
            let kind = rustix::fs::FileType::from_raw_mode(found.st_mode);
            if kind == rustix::fs::FileType::RegularFile
                && found.st_nlink > 1
                && found.st_uid != account.uid
            {
                // A hard link to someone else's file: not the cluster's.
                tracing::warn!(path = %child.display(), "not handing over a file linked from elsewhere");
                continue;
            }
            if kind == rustix::fs::FileType::Directory {
                // Opened without following a link: one swapped in since
                // the listing fails here rather than being followed.
                let sub = rustix::fs::openat(&fd, name, directory, Mode::empty())
                    .with_context(|| giving(&child))?;
                rustix::fs::fchown(&sub, owner, group).with_context(|| giving(&child))?;
                stack.push((sub, child));
            } else {
                // A link itself is changed, never what it names.
                rustix::fs::chownat(
                    &fd,
                    name,
                    owner,
                    group,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .with_context(|| giving(&child))?;
            }
        }
    }
    Ok(())
}

/// Creates the cluster at `pgdata`: initdb writes it beside, as
/// `postgres.init`, and it takes its place only once complete. initdb
/// writes `PG_VERSION` early, so a first start killed midway (power lost,
/// the OOM killer, a container stopped) used to leave a directory that
/// looked like a cluster and never started.
fn initdb(
    installation: &Installation,
    pgdata: &Path,
    account: Option<Account>,
    fsync: bool,
    log: &Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let data_dir = pgdata.parent().context("cluster directory has no parent")?;
    if account.is_some() {
        // The Postgres user must be able to pass through the data directory.
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o711))?;
    }
    let building = data_dir.join("postgres.init");
    match std::fs::remove_dir_all(&building) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", building.display()));
        }
        _ => {}
    }
    std::fs::create_dir(&building)?;
    std::fs::set_permissions(&building, std::fs::Permissions::from_mode(0o700))?;
    if let Some(account) = account {
        give(&building, account)?;
    }
    tracing::info!(path = %pgdata.display(), "initialising the Postgres cluster");
    let (initdb, target) = (installation.bin("initdb"), building.clone());
    let make = move || {
        let mut command = Command::new(&initdb);
        command.arg("-D").arg(&target).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]);
        if !fsync {
            command.arg("--no-sync");
        }
        command
    };
    let (_, exited) = spawn(Box::new(make), account, log, None)?;
    let status = exited.recv().context("initdb supervisor vanished")??;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&building);
        bail!(
            "initdb failed ({status}); its output, in {}, ends with:\n{}\n(when running as root, \
             every directory above the data directory must be searchable by the Postgres user)",
            log.display(),
            tail(log)
        );
    }
    // initdb synced the files it wrote (unless told not to); the rename is
    // made durable with the directory that holds it.
    std::fs::rename(&building, pgdata)
        .with_context(|| format!("moving the new cluster to {}", pgdata.display()))?;
    if fsync {
        std::fs::File::open(data_dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether `pgdata` holds a cluster; `false` if there is nothing there yet.
/// Anything else there, or a directory that cannot be read, stops the
/// start: it is never removed to make room for a new cluster.
fn initialised(pgdata: &Path) -> anyhow::Result<bool> {
    let version = pgdata.join("PG_VERSION");
    if version
        .try_exists()
        .with_context(|| format!("reading {}", version.display()))?
    {
        return Ok(true);
    }
    let empty = match std::fs::read_dir(pgdata) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pgdata.display())),
        Ok(mut entries) => entries.next().is_none(),
    };
    if empty {
        std::fs::remove_dir(pgdata)?;
        return Ok(false);
    }
    bail!(
        "{} is not empty but holds no Postgres cluster (no PG_VERSION); move it away to \
             start a new cluster, or restore the old one",
        pgdata.display()
    )
}

/// The socket's directory: the cluster directory when the socket path fits
/// the kernel's limit, else a private directory under /tmp. A directory of
/// that name already there is used only if it is a real directory, 0700,
/// and owned by whoever runs Postgres: the name is predictable, and
/// anyone can create it first (or a link by that name).
fn socket_dir(pgdata: &Path, port: u16, account: Option<Account>) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const SUN_PATH_MAX: usize = 107;
    let socket = format!("{}/.s.PGSQL.{port}", pgdata.display());
    if socket.len() <= SUN_PATH_MAX {
        return Ok(pgdata.to_path_buf());
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(pgdata.as_os_str().as_encoded_bytes())[..6]);
    let dir = std::env::temp_dir().join(format!("zatabase-{hash}"));
    let owner = account.map_or_else(|| rustix::process::geteuid().as_raw(), |a| a.uid);
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            if let Some(account) = account {
                give(&dir, account)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let found = std::fs::symlink_metadata(&dir)?;
            if !found.file_type().is_dir()
                || found.uid() != owner
                || found.permissions().mode() & 0o777 != 0o700
            {
                bail!(
                    "{} (the Postgres socket's directory: the cluster's path is too long for a \
                     socket) exists and is not a 0700 directory of uid {owner}; remove it, or \
                     use a shorter data directory",
                    dir.display()
                );
            }
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    Ok(dir)
}

/// A `postmaster.pid` left by a Postgres that is gone is removed; one whose
/// Postgres is still shutting down (its host just died) is waited for.
async fn clear_stale_pid(pgdata: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Some(pid) = running_postmaster(pgdata) else {
            return Ok(());
        };
        if Instant::now() > deadline {
            bail!(
                "a Postgres (pid {}) is still running on {}; is another zatabase using this data directory?",
                pid.as_raw_nonzero().get(),
                pgdata.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The postmaster that `postmaster.pid` names, if it is a live Postgres;
/// a file naming anything else is removed.
fn running_postmaster(pgdata: &Path) -> Option<Pid> {
    let file = pgdata.join("postmaster.pid");
    let text = std::fs::read_to_string(&file).ok()?;
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .and_then(Pid::from_raw);
    let alive = pid.filter(|pid| {
        rustix::process::test_kill_process(*pid).is_ok()
            && std::fs::read_to_string(format!("/proc/{}/comm", pid.as_raw_nonzero()))
                .is_ok_and(|comm| comm.trim() == "postgres")
    });
    if alive.is_none() {
        let _ = std::fs::remove_file(&file);
    }
    alive
}

/// A process the host runs (Postgres, or initdb), as its supervisor
/// thread keeps it.
struct Child {
    running: Mutex<Running>,
    /// Signalled when `stopping` is set.
    changed: Condvar,
}

struct Running {
    /// The process while it has not been reaped: its pid cannot have been
    /// reused, so a signal sent to it reaches it and nothing else.
    pid: Option<Pid>,
    /// Start it again when it exits (Postgres, once it was ready).
    restart: bool,
    /// The host is stopping it: an exit is final.
    stopping: bool,
}

impl Running {
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

impl Child {
    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The wait before starting a Postgres that died again, doubled at each
/// quick death up to [`RESTART_AT_MOST`].
const RESTART_FIRST: Duration = Duration::from_secs(2);
const RESTART_AT_MOST: Duration = Duration::from_secs(60);
/// A Postgres that ran this long before dying is restarted after
/// [`RESTART_FIRST`] again.
const RAN_WELL: Duration = Duration::from_secs(60);

/// Starts what `make` makes from a thread that outlives it, as `account`,
/// in its own process group (a terminal's Ctrl-C goes to the host, which
/// then stops Postgres in order), with SIGINT as its parent-death signal.
/// Once its [`Running::restart`] is set, the thread starts it again each
/// time it exits, after a wait (and, for Postgres, once the cluster in
/// `pgdata` is free), until the host stops it: a Postgres that crashed
/// or was killed comes back by itself, and the host's pools reconnect.
/// The receiver gets the final exit.
fn spawn(
    make: Box<dyn Fn() -> Command + Send>,
    account: Option<Account>,
    log: &Path,
    pgdata: Option<PathBuf>,
) -> anyhow::Result<(Arc<Child>, mpsc::Receiver<std::io::Result<ExitStatus>>)> {
    let log = log.to_path_buf();
    let host = rustix::process::getpid();
    // Prepares a command; what it returns says when its output is all in
    // the log.
    let prepare = move |command: &mut Command| -> std::io::Result<mpsc::Receiver<()>> {
        let (output, pipe) = std::io::pipe()?;
        command
            .stdin(Stdio::null())
            .stdout(pipe.try_clone()?)
            .stderr(pipe)
            .process_group(0);
        let copied = LogWriter::open(&log)?.copy_from(output)?;
        if let Some(account) = account {
            command.uid(account.uid).gid(account.gid);
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (prctl, getppid, exit). It
        // runs after the uid/gid change, which would otherwise clear the
        // parent-death signal.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(Signal::INT))?;
                // The host may have died between fork and prctl.
                if rustix::process::getppid() != Some(host) {
                    std::process::exit(1);
                }
                Ok(())
            });
        }
        Ok(copied)
    };
    let child = Arc::new(Child {
        running: Mutex::new(Running {
            pid: None,
            restart: false,
            stopping: false,
        }),
        changed: Condvar::new(),
    });
    let (started_tx, started_rx) = mpsc::channel();
    let (exited_tx, exited_rx) = mpsc::channel();
    let program = make().get_program().to_string_lossy().into_owned();
    let supervised = child.clone();
    std::thread::Builder::new()
        .name("postgres-supervisor".to_owned())
        .spawn(move || {
            let child = supervised;
            let mut started = Some(started_tx);
            let mut wait = RESTART_FIRST;
            loop {
                let mut command = make();
                let spawned =
                    prepare(&mut command).and_then(|copied| Ok((command.spawn()?, copied)));
                // The command holds the pipe's writing end: dropped, the log
                // ends when the process and its children are gone.
                drop(command);
                let since = Instant::now();
                let status = match spawned {
                    Ok((mut process, copied)) => {
                        let pid = Pid::from_child(&process);
                        {
                            let mut running = child.lock();
                            running.pid = Some(pid);
                            if running.stopping {
                                running.signal(Signal::INT);
                            }
                        }
                        if let Some(started) = started.take() {
                            let _ = started.send(Ok(()));
                        }
                        // Exited, but not reaped until its pid is forgotten.
                        while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
                            rustix::process::WaitId::Pid(pid),
                            rustix::process::WaitIdOptions::EXITED
                                | rustix::process::WaitIdOptions::NOWAIT,
                        ) {}
                        let mut running = child.lock();
                        running.pid = None;
                        let status = process.wait();
                        drop(running);
                        // Its last words in the log before anyone reads
                        // them there (a child still holding the pipe
                        // gets a second).
                        let _ = copied.recv_timeout(Duration::from_secs(1));
                        status
                    }
                    Err(error) => match started.take() {
                        Some(started) => {
                            let _ = started.send(Err(error));
                            return;
                        }
                        None => Err(error),
                    },
                };
                let running = child.lock();
                if running.stopping || !running.restart {
                    drop(running);
                    let _ = exited_tx.send(status);
                    return;
                }
                if since.elapsed() >= RAN_WELL {
                    wait = RESTART_FIRST;
                }
                tracing::error!(
                    status = %status.as_ref().map_or_else(|e| e.to_string(), |s| s.to_string()),
                    "Postgres exited; starting it again in {} s",
                    wait.as_secs()
                );
                let (running, _) = child
                    .changed
                    .wait_timeout_while(running, wait, |running| !running.stopping)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if running.stopping {
                    drop(running);
                    let _ = exited_tx.send(status);
                    return;
                }
                drop(running);
                wait = (wait * 2).min(RESTART_AT_MOST);
                if let Some(pgdata) = &pgdata {
                    // Its backends outlive a killed postmaster for a moment.
                    let _ = running_postmaster(pgdata);
                }
            }
        })?;
    started_rx
        .recv()
        .context("the supervisor thread vanished")?
        .with_context(|| format!("starting {program}"))?;
    Ok((child, exited_rx))
}

/// Where Postgres's output goes: `postgres.log`, readable by the host's
/// user alone, and at most [`LogWriter::MAX_BYTES`] of it, the file before
/// kept as `postgres.log.1`. Postgres writes to a pipe the host reads,
/// so nothing it is made to log (a tenant's `RAISE LOG`, in a loop) fills
/// the disk.
struct LogWriter {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
}

impl LogWriter {
    const MAX_BYTES: u64 = 16 << 20;

    fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        // One made before the host made it private.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written,
        })
    }

    /// Copies `output` into the log from a thread of its own, until every
    /// process holding the pipe's other end is gone; the receiver hears
    /// when it is.
    fn copy_from(mut self, mut output: std::io::PipeReader) -> std::io::Result<mpsc::Receiver<()>> {
        let (done, copied) = mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-log".to_owned())
            .spawn(move || {
                let mut buffer = vec![0; 64 << 10];
                loop {
                    match output.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => self.write(&buffer[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = done.send(());
            })?;
        Ok(copied)
    }

    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        if self.written + bytes.len() as u64 > Self::MAX_BYTES && self.written > 0 {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            match Self::open(&self.path) {
                Ok(fresh) => *self = fresh,
                Err(error) => tracing::warn!(%error, "starting a new Postgres log"),
            }
        }
        if self.file.write_all(bytes).is_ok() {
            self.written += bytes.len() as u64;
        }
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// How a server process serving one of the host's connections is
/// scheduled, on the embedded Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Request work: `SCHED_BATCH`. A backend woken by a query then no
    /// longer preempts the request thread that sent it (a context switch
    /// in the middle of every request on a busy host); it runs on an idle
    /// core at once, or as soon as that thread waits for the answer.
    /// `POST /v1/sql` at saturation: +10 % requests/s (bench/RESULTS.md).
    Request,
    /// Background writes: batch and the lowest priority, on idle CPU
    /// rather than competing with requests (Postgres compressing a
    /// telemetry batch raised `/fn` p99 latency at saturation by ~6 %).
    Background,
}

/// Schedules the server process `pid` (of the embedded Postgres) as `kind`
/// says. Best effort: a process that cannot be changed runs as Postgres
/// started it.
pub fn schedule_backend(pid: i32, kind: Backend) {
    let normal = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call on a process id; `normal` outlives it.
    let batch = unsafe { libc::sched_setscheduler(pid, libc::SCHED_BATCH, &normal) };
    if batch != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), pid, "scheduling a backend as batch work");
    }
    if kind == Backend::Background {
        let niced = rustix::process::Pid::from_raw(pid)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|pid| rustix::process::setpriority_process(Some(pid), 19));
        if let Err(error) = niced {
            tracing::debug!(%error, pid, "lowering a background connection's priority");
        }
    }
}
