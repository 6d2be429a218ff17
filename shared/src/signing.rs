//! HMAC-SHA256 signatures of webhook bodies: `sha256=<hex>` over the exact
//! bytes sent, with a secret both sides share.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header that carries the signature, both ways.
pub const SIGNATURE_HEADER: &str = "x-reelay-signature";

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `signature` is [`sign`] of `body` (compared in constant time).
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_and_secret() {
        let signature = sign("secret", b"{\"a\":1}");
        assert!(verify("secret", b"{\"a\":1}", &signature));
        assert!(!verify("secret", b"{\"a\":2}", &signature));
        assert!(!verify("other", b"{\"a\":1}", &signature));
        assert!(!verify("secret", b"{\"a\":1}", "sha256=zz"));
        assert!(!verify(
            "secret",
            b"{\"a\":1}",
            &signature.replace("sha256=", "")
        ));
    }
}
