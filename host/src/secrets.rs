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
                write_private(file, hex::encode(key).as_bytes())?;
                Ok(Self(key))
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

/// Writes a file only its owner can read, atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
