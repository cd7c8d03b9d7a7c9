//! The host's master key and what is derived from it.
//!
//! One random 32-byte key per installation, in `<data-dir>/master.key`
//! (mode 0600) or given by `ZATABASE_MASTER_KEY` (hex) when several hosts
//! share one database. Derived values (tenant role passwords, ...) are
//! HMAC-SHA256 of a label under it, so nothing derived is ever stored.

use std::path::Path;

use anyhow::{Context, ensure};
use sha2::{Digest, Sha256};

/// The installation's master key. Never logged, never handed to a guest.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From hex (the environment), or from the key file, created if absent.
    pub fn load(hex_key: Option<&str>, file: &Path) -> anyhow::Result<Self> {
        if let Some(hex_key) = hex_key {
            return Self::from_hex(hex_key.trim()).context("ZATABASE_MASTER_KEY");
        }
        match std::fs::read_to_string(file) {
            Ok(text) => Self::from_hex(text.trim()).with_context(|| format!("{}", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty())
                    .context("reading the system's random source")?;
                // Created only if still absent: of two hosts creating it
                // at once, both end up with the one that was written.
                if write_private(file, hex::encode(key).as_bytes())? {
                    Ok(Self(key))
                } else {
                    Self::load(None, file)
                }
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    fn from_hex(text: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(text).context("the master key must be hex")?;
        ensure!(
            bytes.len() == 32,
            "the master key must be 32 bytes (64 hex digits)"
        );
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }

    /// HMAC-SHA256(key, label), hex.
    pub fn derive(&self, label: &str) -> String {
        hex::encode(hmac_sha256(&self.0, label.as_bytes()))
    }
}

impl MasterKey {
    /// An AES-256-GCM box whose key is derived from this one under `label`.
    pub fn secret_box(&self, label: &str) -> SecretBox {
        let key = hmac_sha256(&self.0, label.as_bytes());
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key)
            .expect("a 32-byte key is an AES-256 key");
        SecretBox(ring::aead::LessSafeKey::new(key))
    }
}

/// Encrypts values kept at rest (users' function secrets): AES-256-GCM
/// with a random nonce, written `sealed:v2:<base64 of nonce and sealed
/// bytes>`. A database dump without the master key reveals nothing.
///
/// Each value is bound to where it belongs (its [`SecretBox::seal`]
/// `context`: tenant and name) as the cipher's associated data: copied
/// into another tenant's row, or under another name, it no longer opens.
/// Values of the first format, `sealed:v1:`, were bound to nothing; they
/// open only through [`SecretBox::open_unbound`], to be sealed again.
pub struct SecretBox(ring::aead::LessSafeKey);

const SEALED: &str = "sealed:v2:";
const SEALED_UNBOUND: &str = "sealed:v1:";

impl SecretBox {
    /// Whether `value` is written as this box writes (not whether it opens).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(SEALED)
    }

    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        use base64::Engine as _;
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        rustix::rand::getrandom(&mut nonce, rustix::rand::GetRandomFlags::empty())
            .expect("the system's random source");
        let mut sealed = plaintext.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM seals any length we keep");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// The plaintext of a value sealed under `context`; `None` when it does
    /// not open (another key, another context, tampered with, or not a
    /// sealed value at all).
    pub fn open(&self, value: &str, context: &str) -> Option<String> {
        self.open_with(value.strip_prefix(SEALED)?, context.as_bytes())
    }

    /// The plaintext of a value written before values were bound to their
    /// context: `sealed:v1:`, or in the clear before anything was sealed.
    /// `None` for anything else.
    pub fn open_unbound(&self, value: &str) -> Option<String> {
        match value.strip_prefix(SEALED_UNBOUND) {
            Some(encoded) => self.open_with(encoded, &[]),
            None if value.starts_with("sealed:") => None,
            None => Some(value.to_owned()),
        }
    }

    fn open_with(&self, encoded: &str, context: &[u8]) -> Option<String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        if bytes.len() < ring::aead::NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(ring::aead::NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, ring::aead::Aad::from(context), &mut sealed)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Writes a file only its owner can read, whole or not at all, unless one
/// is already there: whether it was written.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("new-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&tmp, path);
    if linked.is_ok()
        || linked
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists)
    {
        let _ = std::fs::remove_file(&tmp);
    }
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // A file system without hard links: the data directory's lock
        // keeps a second host out anyway.
        Err(_) => {
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_key_and_context_and_untouched() {
        let key = MasterKey([7; 32]);
        let seal = |value: &str| key.secret_box("test").seal(value, "tenant-a/api_key");
        let sealed = seal("s3cret value");
        assert!(SecretBox::is_sealed(&sealed) && !sealed.contains("s3cret"));
        assert_ne!(sealed, seal("s3cret value"), "fresh nonces");
        let open = |value: &str, context: &str| key.secret_box("test").open(value, context);
        assert_eq!(
            open(&sealed, "tenant-a/api_key").as_deref(),
            Some("s3cret value")
        );
        assert_eq!(open(&sealed, "tenant-b/api_key"), None, "another tenant");
        assert_eq!(open(&sealed, "tenant-a/other"), None, "another name");
        assert_eq!(
            key.secret_box("other").open(&sealed, "tenant-a/api_key"),
            None
        );
        assert_eq!(
            MasterKey([8; 32])
                .secret_box("test")
                .open(&sealed, "tenant-a/api_key"),
            None
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            open(&String::from_utf8(tampered).unwrap(), "tenant-a/api_key"),
            None
        );
        assert_eq!(
            open("plain", "tenant-a/api_key"),
            None,
            "only sealed values open"
        );
        // Values of before: unbound, or in the clear; never a bound one.
        assert_eq!(
            key.secret_box("test").open_unbound("plain").as_deref(),
            Some("plain")
        );
        assert_eq!(key.secret_box("test").open_unbound(&sealed), None);
        let unbound = key
            .secret_box("test")
            .seal("old", "")
            .replace("sealed:v2:", "sealed:v1:");
        assert_eq!(
            key.secret_box("test").open_unbound(&unbound).as_deref(),
            Some("old")
        );
        assert_eq!(
            open(&unbound, ""),
            None,
            "an unbound value is not a bound one"
        );
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("zatabase-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("master.key");
        let a = MasterKey::load(None, &file).unwrap();
        let b = MasterKey::load(None, &file).unwrap();
        assert_eq!(a.derive("x"), b.derive("x"));
        assert_ne!(a.derive("x"), a.derive("y"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(MasterKey::load(Some("abcd"), &file).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
