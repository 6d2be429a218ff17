//! Firmware signatures: an Ed25519 signature over a canonical JSON manifest
//! of the firmware (hardware type, version, version_num, size, SHA-256 in
//! hex), so a device can check what it is about to install. The manifest's
//! exact bytes and the signature are stored with the firmware; the public
//! key is served at `GET /v1/fleet/signing-key`.

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The bytes that are signed: compact JSON, keys in lexicographic order,
/// no whitespace, so anyone can rebuild them from the fields.
pub fn manifest(
    hardware_type: &str,
    version: &str,
    version_num: i64,
    size: u64,
    sha256: &str,
) -> Vec<u8> {
    let text = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    format!(
        "{{\"hardware_type\":{},\"sha256\":{},\"size\":{size},\"version\":{},\"version_num\":{version_num}}}",
        text(hardware_type),
        text(sha256),
        text(version),
    )
    .into_bytes()
}

/// The key firmware is signed with (a worker's `REELAY_FLEET_SIGNING_KEY`).
#[derive(Clone)]
pub struct FirmwareSigner {
    key: SigningKey,
}

impl std::fmt::Debug for FirmwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirmwareSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl PartialEq for FirmwareSigner {
    fn eq(&self, other: &Self) -> bool {
        self.key.to_bytes() == other.key.to_bytes()
    }
}

impl FirmwareSigner {
    /// From the base64 of a 32-byte Ed25519 seed (`openssl rand -base64 32`).
    pub fn from_base64(seed: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(seed.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "an Ed25519 seed is 32 bytes".to_owned())?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The seed again, as `from_base64` reads it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }

    /// The 32 raw bytes of the public key, base64.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.key.verifying_key().to_bytes())
    }

    /// A short name of the key: the first 16 hex digits of the SHA-256 of
    /// its public bytes.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.key.verifying_key().to_bytes());
        hex::encode(&digest[..8])
    }

    /// The base64 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.key.sign(message).to_bytes())
    }
}

/// Whether `signature` (base64) is `public_key`'s (base64) over `message`.
pub fn verify(public_key: &str, message: &[u8], signature: &str) -> bool {
    let key = STANDARD
        .decode(public_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok());
    let signature = STANDARD
        .decode(signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b));
    match (key, signature) {
        (Some(key), Some(signature)) => key.verify(message, &signature).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_canonical_json() {
        let bytes = manifest("vega_mcu", "1.2.\"3\"", 7, 42, "ab");
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"hardware_type":"vega_mcu","sha256":"ab","size":42,"version":"1.2.\"3\"","version_num":7}"#
        );
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["version_num"], 7);
    }

    #[test]
    fn a_signature_verifies_only_for_its_key_and_bytes() {
        let signer = FirmwareSigner::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let message = manifest("iot", "1", 1, 1, "00");
        let signature = signer.sign(&message);
        assert!(verify(&signer.public_key(), &message, &signature));
        assert!(!verify(&signer.public_key(), b"other", &signature));
        let other = FirmwareSigner::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(!verify(&other.public_key(), &message, &signature));
        assert_eq!(signer.key_id().len(), 16);
        assert!(FirmwareSigner::from_base64("c2hvcnQ=").is_err());
    }
}
