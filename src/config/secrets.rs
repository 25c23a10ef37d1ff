//! Passwords stored encrypted in the configuration: `enc:` followed by the base64 of a
//! random 96-bit nonce and the AES-256-GCM ciphertext with its tag. The 256-bit key lives in
//! a separate file (64 hex digits, mode 0600) made by `switchyard keygen`; `switchyard
//! encrypt` turns a password into such a value. GCM authenticates, so a value altered or
//! encrypted with another key is reported, never decrypted to garbage.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

/// What marks an encrypted value.
pub const PREFIX: &str = "enc:";

const NONCE_LEN: usize = 12;

/// A configuration key.
pub struct Key(Aes256Gcm);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

/// Why a key or a value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("can't read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {0} must hold 64 hexadecimal digits (made by `switchyard keygen`)")]
    BadKey(String),
    #[error("key file {0} already exists; remove it first to make a new key")]
    Exists(String),
    #[error("can't write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the encrypted value is not valid base64 of a nonce and a ciphertext")]
    Malformed,
    #[error("the encrypted value does not decrypt with this key (another key, or altered)")]
    WrongKey,
    #[error("the decrypted value is not UTF-8")]
    NotText,
}

impl Key {
    /// Reads a key file.
    pub fn read(path: &Path) -> Result<Key, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| SecretError::BadKey(path.display().to_string()))?;
        Ok(Key::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Key {
        Key(Aes256Gcm::new_from_slice(bytes).expect("32-byte key"))
    }

    /// Writes a new random key to `path` (created with mode 0600; an existing file is kept).
    pub fn generate(path: &Path) -> Result<(), SecretError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    SecretError::Exists(path.display().to_string())
                } else {
                    SecretError::Write {
                        path: path.display().to_string(),
                        source,
                    }
                }
            })?;
        writeln!(f, "{}", hex::encode(bytes)).map_err(|source| SecretError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// `enc:...` for `plain`, with a fresh nonce (the same password encrypts differently
    /// each time).
    pub fn encrypt(&self, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .expect("AES-GCM encryption of an in-memory buffer");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// The plaintext of an `enc:...` value.
    pub fn decrypt(&self, value: &str) -> Result<String, SecretError> {
        let body = value.strip_prefix(PREFIX).ok_or(SecretError::Malformed)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| SecretError::Malformed)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| SecretError::NotText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_fresh_nonces_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        Key::generate(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(Key::generate(&path), Err(SecretError::Exists(_))));
        let key = Key::read(&path).unwrap();
        let a = key.encrypt("s3cret é");
        let b = key.encrypt("s3cret é");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(a.starts_with(PREFIX) && !a.contains("s3cret"));
        assert_eq!(key.decrypt(&a).unwrap(), "s3cret é");

        let other = dir.path().join("other");
        Key::generate(&other).unwrap();
        let other = Key::read(&other).unwrap();
        assert!(matches!(other.decrypt(&a), Err(SecretError::WrongKey)));

        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&a[PREFIX.len()..])
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        assert!(matches!(key.decrypt(&tampered), Err(SecretError::WrongKey)));
        assert!(matches!(key.decrypt("enc:!!"), Err(SecretError::Malformed)));
        assert!(matches!(
            key.decrypt("enc:AAAA"),
            Err(SecretError::Malformed)
        ));

        std::fs::write(dir.path().join("bad"), "xyz\n").unwrap();
        assert!(matches!(
            Key::read(&dir.path().join("bad")),
            Err(SecretError::BadKey(_))
        ));
    }
}
