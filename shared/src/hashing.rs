//! A SHA-256 whose midstate can be saved to Postgres and resumed by another
//! process, so a worker that takes over an upload continues the hash.

use sha2::{
    Digest, Sha256,
    digest::common::hazmat::{SerializableState, SerializedState},
};

/// The midstate could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("invalid SHA-256 midstate")]
pub struct InvalidHashState;

/// Hex of the hasher's internal state (chaining value, length, partial block).
pub fn save(hasher: &Sha256) -> String {
    hex::encode(hasher.serialize())
}

/// The hasher saved by [`save`]; the empty string is a fresh hasher.
pub fn restore(state: &str) -> Result<Sha256, InvalidHashState> {
    if state.is_empty() {
        return Ok(Sha256::new());
    }
    let bytes = hex::decode(state).map_err(|_| InvalidHashState)?;
    let array =
        SerializedState::<Sha256>::try_from(bytes.as_slice()).map_err(|_| InvalidHashState)?;
    Sha256::deserialize(&array).map_err(|_| InvalidHashState)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_midstate_finishes_the_same_hash() {
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = hex::encode(Sha256::digest(&data));
        let mut first = Sha256::new();
        first.update(&data[..40_001]);
        let mut resumed = restore(&save(&first)).unwrap();
        resumed.update(&data[40_001..]);
        assert_eq!(hex::encode(resumed.finalize()), whole);
        assert!(restore("zz").is_err());
        assert_eq!(
            hex::encode(restore("").unwrap().finalize()),
            hex::encode(Sha256::digest(b""))
        );
    }
}
