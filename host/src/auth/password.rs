//! Passwords: argon2id, hashed on the blocking pool (a hash is tens of
//! milliseconds of one core by design), one a core at a time (the auth
//! service runs them in [`crate::turns::Turns`]).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Hashes and verifies with fixed argon2id parameters.
#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    /// A hash of nothing anyone knows, verified against when the account
    /// does not exist, so a wrong email costs what a wrong password costs.
    decoy: String,
}

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut passwords = Self {
            argon2,
            decoy: String::new(),
        };
        let mut secret = [0u8; 32];
        rustix::rand::getrandom(&mut secret, rustix::rand::GetRandomFlags::empty())?;
        passwords.decoy = passwords.hash(&hex::encode(secret))?;
        Ok(passwords)
    }

    /// The PHC string of an argon2id hash with a fresh random salt.
    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        let mut salt = [0u8; 16];
        rustix::rand::getrandom(&mut salt, rustix::rand::GetRandomFlags::empty())?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Ok(self
            .argon2
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
            .to_string())
    }

    /// Whether `hash` was made as [`Self::hash`] makes one now: argon2id
    /// with these parameters. One made before the operator changed them
    /// costs another time to check than the decoy does, so a login that
    /// verifies it stores a new one.
    pub fn is_current(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let ours = self.argon2.params();
        Algorithm::try_from(parsed.algorithm) == Ok(Algorithm::Argon2id)
            && parsed.version == Some(Version::V0x13.into())
            && (params.m_cost(), params.t_cost(), params.p_cost())
                == (ours.m_cost(), ours.t_cost(), ours.p_cost())
    }

    /// Whether `password` matches `hash`; `None` is checked against the decoy
    /// and is never a match. A malformed stored hash is no match either.
    pub fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        let (stored, real) = match hash {
            Some(hash) => (hash, true),
            None => (self.decoy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        // The comparison inside is constant-time.
        let matches = self
            .argon2
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        matches && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_of_other_parameters_are_not_current() {
        let (now, before) = (
            Passwords::new(1024, 1, 1).unwrap(),
            Passwords::new(2048, 1, 1).unwrap(),
        );
        let old = before.hash("a password").unwrap();
        assert!(now.verify("a password", Some(&old)), "still verifies");
        assert!(!now.is_current(&old));
        assert!(now.is_current(&now.hash("a password").unwrap()));
        assert!(!now.is_current("not a hash"));
    }

    #[test]
    fn hashes_verify_and_decoys_never_match() {
        let passwords = Passwords::new(1024, 1, 1).unwrap();
        let hash = passwords.hash("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(passwords.verify("correct horse", Some(&hash)));
        assert!(!passwords.verify("wrong horse", Some(&hash)));
        assert!(!passwords.verify("correct horse", None));
        assert!(!passwords.verify("correct horse", Some("not a hash")));
        assert_ne!(hash, passwords.hash("correct horse").unwrap(), "salted");
    }
}
