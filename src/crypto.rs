//! Cryptographic primitives, in one place: the secret key type, the one AEAD
//! construction every seal in Strongbox uses, HKDF, HMAC, random bytes and
//! the constant-time comparison helper.
//!
//! # The seal construction
//!
//! `seal(key, label, aad, plaintext)` draws a fresh 128-bit salt and 96-bit
//! nonce, derives a one-time AES-256 subkey
//! `HKDF-SHA256(salt, ikm = key, info = label)` and encrypts with AES-256-GCM.
//! Because every message gets its own subkey, no AES key ever encrypts more
//! than one message and the NIST SP 800-38D bound of 2^32 random-nonce
//! messages per key holds by construction, whatever the traffic. The label
//! separates purposes (a record can never be opened as a wrapped key).
//!
//! Sealed layout: `version (1) || salt (16) || nonce (12) || ciphertext || tag (16)`.

use std::fmt;

use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every symmetric key in Strongbox (AES-256, HMAC-SHA256).
pub const KEY_LEN: usize = 32;
const SEAL_VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a seal adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + SALT_LEN + NONCE_LEN + TAG_LEN;

/// HKDF info labels: one per purpose, so a ciphertext made for one purpose
/// never opens for another.
pub mod label {
    pub const RECORD: &str = "strongbox/v1/record";
    pub const SUBJECT_ID: &str = "strongbox/v1/subject-id";
    pub const WRAP_DEK: &str = "strongbox/v1/wrap/data-key";
    pub const WRAP_KEK: &str = "strongbox/v1/wrap/tenant-kek";
    pub const WRAP_INDEX_KEY: &str = "strongbox/v1/wrap/index-key";
    pub const WRAP_RECEIPT_KEY: &str = "strongbox/v1/wrap/receipt-key";
    pub const WRAP_AUDIT_KEY: &str = "strongbox/v1/wrap/audit-key";
    pub const WRAP_STATE_KEY: &str = "strongbox/v1/wrap/state-key";
    pub const WRAP_ERASURE_KEY: &str = "strongbox/v1/wrap/erasure-wrap-key";
    pub const ROOT_CHECK: &str = "strongbox/v1/root-check";
}

/// Authentication failed: wrong key, tampered bytes, or another identity's
/// ciphertext. Deliberately carries no detail.
#[derive(Debug, PartialEq, Eq)]
pub struct CryptoError;

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("authentication failed")
    }
}

impl std::error::Error for CryptoError {}

/// A 256-bit secret key (root key, KEK, DEK, index or receipt key).
///
/// Implements no `Debug`, `Clone`, `PartialEq` or `Serialize`; zeroizes on
/// drop; read only through [`SecretKey::expose_secret`]. Boxed so moves do
/// not leave copies on the stack.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = Box::new([0u8; KEY_LEN]);
        fill_random(&mut key[..]);
        SecretKey(key)
    }

    /// Takes a key from bytes; the caller's copy is zeroized by the caller's
    /// `Zeroizing` wrapper.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError);
        }
        let mut key = Box::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(SecretKey(key))
    }

    /// The raw key bytes. Every read of key material goes through here.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// A failing OS RNG leaves no safe way to make keys or nonces, so this stops
/// the process rather than continue with predictable bytes.
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    OsRng
        .try_fill_bytes(buf)
        .expect("invariant: the OS CSPRNG is available");
}

/// `N` random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill_random(&mut b);
    b
}

/// HKDF-SHA256 (RFC 5869) into `out`; fails only if `out` is longer than
/// 255 * 32 bytes.
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out)
        .map_err(|_| CryptoError)
}

/// HMAC-SHA256 of `parts` concatenated, under `key`.
pub fn hmac_sha256(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret())
        .expect("invariant: HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data` (API key secrets: high-entropy, so unsalted is enough).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality for secrets, MACs and hashes. The only way
/// Strongbox compares such bytes.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Encodes identity fields for AAD and MAC input: each field as a 4-byte
/// big-endian length then its bytes, so no two field lists encode alike.
pub fn encode_fields(fields: &[&[u8]]) -> Vec<u8> {
    let len = fields.iter().map(|f| 4 + f.len()).sum();
    let mut out = Vec::with_capacity(len);
    for f in fields {
        // Fields are bounded far below 4 GiB by the limits on ids and values.
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Inverse of [`encode_fields`]; `None` if the bytes are not such an encoding.
pub fn decode_fields(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        fields.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Some(fields)
}

/// Bytes that were or will be encrypted (a record's value), wiped when
/// dropped: the allocation is set to zero, spare capacity included, and
/// zeroize's optimization barrier keeps the compiler from eliding the
/// writes. (`Zeroizing<Vec<u8>>` wipes one byte per volatile store: on a
/// 1 MiB value that was 40% of opening it; `memset` is a few percent.)
#[derive(Default, PartialEq, Eq)]
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    pub fn new(bytes: Vec<u8>) -> Self {
        Plaintext(bytes)
    }

    /// The bytes, out of the wrapper and no longer wiped: for a response
    /// buffer that the transport encodes and drops at once. Moving them
    /// out costs nothing; a copy would cost a pass over the value and
    /// leave the same unwiped bytes behind.
    pub fn into_unwiped(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }

    /// Sets every byte of the allocation to zero, spare capacity
    /// included, in one pass; the barrier keeps the compiler from eliding
    /// the writes of a buffer about to be freed.
    fn wipe(&mut self) {
        let capacity = self.0.capacity();
        self.0.clear();
        self.0.resize(capacity, 0);
        zeroize::optimization_barrier(self.0.as_slice());
    }
}

impl std::ops::Deref for Plaintext {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Plaintext {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// The bytes are secret: their length only.
impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// AES-256-GCM with a 96-bit nonce and 128-bit tag: the bare primitive,
/// exposed for known-answer tests. Output is `ciphertext || tag`.
pub fn gcm_encrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    pt: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .encrypt(&Nonce::from(*nonce), Payload { msg: pt, aad })
        .map_err(|_| CryptoError)
}

/// Inverse of [`gcm_encrypt`]; the plaintext is wiped on drop.
pub fn gcm_decrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ct: &[u8],
) -> Result<Plaintext, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(&Nonce::from(*nonce), Payload { msg: ct, aad })
        .map(Plaintext)
        .map_err(|_| CryptoError)
}

fn subkey(key: &SecretKey, salt: &[u8], label: &str) -> Zeroizing<[u8; KEY_LEN]> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    #[allow(clippy::expect_used)]
    hkdf_sha256(salt, key.expose_secret(), label.as_bytes(), &mut k[..])
        .expect("invariant: 32 bytes is a valid HKDF-SHA256 output length");
    k
}

/// Seals `plaintext` under a one-time subkey of `key` (see the module doc).
pub fn seal(key: &SecretKey, label: &str, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let salt: [u8; SALT_LEN] = random_bytes();
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let k = subkey(key, &salt, label);
    // Encrypted in place in the output, so a value is copied once.
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let body = out.len();
    out.extend_from_slice(plaintext);
    #[allow(clippy::expect_used)]
    let tag = Aes256Gcm::new((&*k).into())
        .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut out[body..]).into())
        .expect("invariant: AES-GCM encryption fails only past 64 GiB, far above the value limit");
    out.extend_from_slice(&tag);
    out
}

/// Opens a [`seal`]ed message; fails if any byte, the key, the label or the
/// AAD differs from sealing.
pub fn open(
    key: &SecretKey,
    label: &str,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Plaintext, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD || sealed[0] != SEAL_VERSION {
        return Err(CryptoError);
    }
    let (salt, rest) = sealed[1..].split_at(SALT_LEN);
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let k = subkey(key, salt, label);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError)?;
    gcm_decrypt(&k, nonce, aad, ct)
}

/// Seals a key under another (key wrapping).
pub fn wrap_key(kek: &SecretKey, label: &str, aad: &[u8], key: &SecretKey) -> Vec<u8> {
    seal(kek, label, aad, key.expose_secret())
}

/// Opens a wrapped key.
pub fn unwrap_key(
    kek: &SecretKey,
    label: &str,
    aad: &[u8],
    wrapped: &[u8],
) -> Result<SecretKey, CryptoError> {
    let bytes = open(kek, label, aad, wrapped)?;
    SecretKey::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_shows_its_length_only_and_round_trips() {
        let p = Plaintext::new(b"canary-value".to_vec());
        assert_eq!(format!("{p:?}"), "Plaintext(12 bytes)");
        let k = SecretKey::from_slice(&[9; KEY_LEN]).unwrap();
        let opened = open(
            &k,
            label::RECORD,
            b"aad",
            &seal(&k, label::RECORD, b"aad", &p),
        )
        .unwrap();
        assert_eq!(opened, p);
        assert_eq!(opened.into_unwiped(), b"canary-value");
    }

    #[test]
    fn plaintext_wipe_zeroes_the_whole_allocation() {
        let mut bytes = Vec::with_capacity(1024);
        bytes.extend_from_slice(&[0xAB; 1024]);
        bytes.truncate(12);
        let capacity = bytes.capacity();
        let mut p = Plaintext::new(bytes);
        p.wipe();
        // The spare capacity (which held the value's old bytes) is wiped
        // too: every byte of the allocation is now in view, and zero.
        assert_eq!(p.len(), capacity);
        assert!(p.iter().all(|&b| b == 0));
    }

    #[test]
    fn seal_round_trip_and_binding() {
        let k = SecretKey::generate();
        let sealed = seal(&k, label::RECORD, b"aad", b"hello");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(
            &open(&k, label::RECORD, b"aad", &sealed).unwrap()[..],
            b"hello"
        );
        assert_eq!(open(&k, label::RECORD, b"aae", &sealed), Err(CryptoError));
        assert_eq!(open(&k, label::WRAP_DEK, b"aad", &sealed), Err(CryptoError));
        assert_eq!(
            open(&SecretKey::generate(), label::RECORD, b"aad", &sealed),
            Err(CryptoError)
        );
    }

    #[test]
    fn fail_every_flipped_byte() {
        let k = SecretKey::generate();
        let sealed = seal(&k, label::RECORD, b"", b"some plaintext");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert_eq!(
                open(&k, label::RECORD, b"", &t),
                Err(CryptoError),
                "byte {i}"
            );
        }
        assert_eq!(
            open(&k, label::RECORD, b"", &sealed[..sealed.len() - 1]),
            Err(CryptoError)
        );
        assert_eq!(open(&k, label::RECORD, b"", &[]), Err(CryptoError));
    }

    #[test]
    fn seals_of_the_same_message_differ() {
        let k = SecretKey::generate();
        assert_ne!(
            seal(&k, label::RECORD, b"", b"x"),
            seal(&k, label::RECORD, b"", b"x")
        );
    }

    #[test]
    fn field_encoding_is_unambiguous() {
        assert_ne!(encode_fields(&[b"ab", b"c"]), encode_fields(&[b"a", b"bc"]));
        assert_ne!(encode_fields(&[b"", b"a"]), encode_fields(&[b"a", b""]));
        let e = encode_fields(&[b"x", b"", b"yz"]);
        assert_eq!(
            decode_fields(&e).unwrap(),
            vec![b"x".to_vec(), vec![], b"yz".to_vec()]
        );
        assert_eq!(decode_fields(&e[..e.len() - 1]), None);
    }

    #[test]
    fn ct_eq_compares_lengths_and_bytes() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
