//! The API key's format, issuing it, and enrolment: a key made on the
//! holder's own machine, of which the server (and whoever relays the
//! enrolment, such as the operator creating a tenant's first admin) sees
//! only the key id and the secret's hash.
//!
//! A key is `sbk_<key id: 16 hex>_<secret: 64 hex>`; the server stores the
//! SHA-256 of the secret (256 random bits, so a plain hash is enough). An
//! enrolment is `sbe_<key id>_<SHA-256 of the secret, 64 hex>`: useless
//! for authenticating, it lets the server register the key without ever
//! receiving it.

use zeroize::Zeroizing;

use crate::crypto;
use crate::error::{Error, Result};

const API_KEY_PREFIX: &str = "sbk_";
const ENROLMENT_PREFIX: &str = "sbe_";
const KEY_ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

/// An API key as issued: shown once, never stored. No `Debug`, zeroized on drop.
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Splits `sbk_<key id>_<secret>`; `None` if it is not that shape.
pub fn parse(bearer: &str) -> Option<(&str, &str)> {
    let rest = bearer.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_hex(id, KEY_ID_HEX) && is_hex(secret, SECRET_HEX)).then_some((id, secret))
}

/// A fresh API key: (key id, full key, hash of the secret).
pub fn issue() -> (String, ApiKey, [u8; 32]) {
    let key_id = hex::encode(crypto::random_bytes::<{ KEY_ID_HEX / 2 }>());
    let secret = Zeroizing::new(hex::encode(crypto::random_bytes::<{ SECRET_HEX / 2 }>()));
    let hash = crypto::sha256(secret.as_bytes());
    let full = ApiKey(Zeroizing::new(format!(
        "{API_KEY_PREFIX}{key_id}_{}",
        secret.as_str()
    )));
    (key_id, full, hash)
}

/// A key registered by its hash: what an enrolment carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolment {
    pub key_id: String,
    pub secret_hash: [u8; 32],
}

impl Enrolment {
    /// Parses `sbe_<key id>_<hash>`; the error names `field`.
    pub fn parse(field: &'static str, s: &str) -> Result<Enrolment> {
        let bad = || {
            Error::invalid(
                field,
                "must be an enrolment as `strongbox enrol` prints it: sbe_<16 hex>_<64 hex>",
            )
        };
        let rest = s.strip_prefix(ENROLMENT_PREFIX).ok_or_else(bad)?;
        let (id, hash) = rest.split_once('_').ok_or_else(bad)?;
        if !is_hex(id, KEY_ID_HEX) || !is_hex(hash, SECRET_HEX) {
            return Err(bad());
        }
        let mut secret_hash = [0u8; 32];
        hex::decode_to_slice(hash, &mut secret_hash).map_err(|_| bad())?;
        Ok(Enrolment {
            key_id: id.to_ascii_lowercase(),
            secret_hash,
        })
    }

    pub fn token(&self) -> String {
        format!(
            "{ENROLMENT_PREFIX}{}_{}",
            self.key_id,
            hex::encode(self.secret_hash)
        )
    }
}

/// A fresh key for its holder to keep, and the enrolment to hand on.
pub fn enrol() -> (ApiKey, Enrolment) {
    let (key_id, key, secret_hash) = issue();
    (
        key,
        Enrolment {
            key_id,
            secret_hash,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_shape() {
        let (id, key, hash) = issue();
        let (pid, secret) = parse(key.expose()).unwrap();
        assert_eq!(pid, id);
        assert!(crypto::ct_eq(&crypto::sha256(secret.as_bytes()), &hash));
        for fail in [
            "",
            "sbk_",
            "sbk_abc_def",
            "Bearer x",
            &key.expose().replace("sbk_", "sbx_"),
        ] {
            assert!(parse(fail).is_none(), "{fail:?}");
        }
    }

    #[test]
    fn enrolment_carries_the_hash_of_the_key_it_came_with() {
        let (key, e) = enrol();
        let (id, secret) = parse(key.expose()).unwrap();
        assert_eq!(id, e.key_id);
        assert_eq!(crypto::sha256(secret.as_bytes()), e.secret_hash);
        assert_eq!(Enrolment::parse("enrolment", &e.token()).unwrap(), e);
        assert!(!e.token().contains(secret), "the enrolment holds no secret");
        for bad in ["", "sbe_", "sbe_zz_00", key.expose(), &e.token()[..40]] {
            let err = Enrolment::parse("enrolment", bad).unwrap_err();
            assert!(err.to_string().starts_with("enrolment:"), "{err}");
        }
    }
}
