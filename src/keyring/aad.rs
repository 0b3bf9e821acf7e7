//! AAD layouts: every wrapped key and ciphertext is bound to who and what
//! it belongs to, so bytes copied to another row fail to open.

use crate::crypto::encode_fields;

pub fn kek(tenant: &str, version: u32) -> Vec<u8> {
    encode_fields(&[b"kek", tenant.as_bytes(), &version.to_be_bytes()])
}

pub fn index_key(tenant: &str) -> Vec<u8> {
    encode_fields(&[b"index-key", tenant.as_bytes()])
}

pub fn dek(tenant: &str, owner: &[u8], dek_id: &str, kek_version: u32) -> Vec<u8> {
    encode_fields(&[
        b"dek",
        tenant.as_bytes(),
        owner,
        dek_id.as_bytes(),
        &kek_version.to_be_bytes(),
    ])
}

/// A record's identity: tenant, owner (subject blind id or empty),
/// category, key, version, content type and data key id.
pub fn record(
    tenant: &str,
    owner: &[u8],
    category: &str,
    key: &str,
    version: u64,
    content_type: &str,
    dek_id: &str,
) -> Vec<u8> {
    encode_fields(&[
        b"record",
        tenant.as_bytes(),
        owner,
        category.as_bytes(),
        key.as_bytes(),
        &version.to_be_bytes(),
        content_type.as_bytes(),
        dek_id.as_bytes(),
    ])
}

pub fn subject_id(tenant: &str, blind: &[u8], dek_id: &str) -> Vec<u8> {
    encode_fields(&[b"subject-id", tenant.as_bytes(), blind, dek_id.as_bytes()])
}

pub fn audit_key() -> Vec<u8> {
    encode_fields(&[b"audit-key"])
}

pub fn receipt_key() -> Vec<u8> {
    encode_fields(&[b"receipt-key"])
}

pub fn state_key() -> Vec<u8> {
    encode_fields(&[b"state-key"])
}

pub fn erasure_wrap_key() -> Vec<u8> {
    encode_fields(&[b"erasure-wrap-key"])
}

pub fn root_check() -> Vec<u8> {
    encode_fields(&[b"root-check"])
}
