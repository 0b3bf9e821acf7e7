//! MACs over security state: tenant rows (state, shred schedule, key
//! versions, rotation policy), principals (tenant, roles, pinned
//! certificate) and API keys (principal, secret hash, expiry, revocation).
//! Someone who can write the database file but does not hold the root key
//! cannot grant themselves access, move a principal to another tenant,
//! un-revoke a key or un-suspend a tenant: the row's MAC, under the state
//! key (held under the root key), binds every such field and the row's
//! identity, so a copied, edited or NULLed row fails to load (`Corrupt`,
//! DATA_LOSS) and the call is refused.
//!
//! Writes go through `seal_*`, which recompute the MAC from the row as
//! stored, after the change and in the same transaction; loads go through
//! `tenant`, `principal` and `api_key`, which check it. Rows written before
//! this existed are sealed once at start (`seal_unsealed`); after that a
//! missing MAC is tampering like a wrong one.

use crate::store::prelude::*;

use crate::crypto::{self, SecretKey, encode_fields};
use crate::error::{Error, Result};
use crate::keyring::Keyring;
use crate::store::{ApiKeyRow, PrincipalRow, TenantRow};

/// The `meta` row that says every row has been sealed.
const SEALED_META: &str = "state_sealed";

fn opt_i64(v: Option<i64>) -> Vec<u8> {
    v.map_or_else(Vec::new, |n| n.to_be_bytes().to_vec())
}

fn opt_str(v: &Option<String>) -> &[u8] {
    v.as_deref().map_or(&[][..], str::as_bytes)
}

/// The tenant row's MAC: everything but the wrapped index key (bound to
/// the tenant by its own AAD) and the MAC itself.
pub fn tenant_mac(key: &SecretKey, t: &TenantRow) -> [u8; 32] {
    let created = t.created_at.to_be_bytes();
    let shred = opt_i64(t.shred_at);
    let kek = t.kek_version.to_be_bytes();
    let min = t.min_decrypt_version.to_be_bytes();
    let age = opt_i64(t.rotate_after_ms);
    let wraps = opt_i64(t.rotate_after_wraps);
    let mut fields: Vec<&[u8]> = vec![
        b"strongbox/v1/state/tenant",
        t.id.as_bytes(),
        t.name.as_bytes(),
        t.state.as_str().as_bytes(),
        &created,
        &shred,
        &kek,
        opt_str(&t.dek_id),
        &min,
        &age,
        &wraps,
    ];
    // Fields added later are appended, each after its name, only when set:
    // rows sealed before they existed still verify, and the names keep
    // every combination apart.
    let recovery = t.admin_recovery_at.map(i64::to_be_bytes);
    if let Some(at) = &recovery {
        fields.extend([&b"admin_recovery_at"[..], at]);
    }
    if let Some(digest) = &t.holds_digest {
        fields.extend([&b"holds"[..], digest]);
    }
    crypto::hmac_sha256(key, &[&encode_fields(&fields)])
}

pub fn principal_mac(key: &SecretKey, p: &PrincipalRow) -> [u8; 32] {
    crypto::hmac_sha256(
        key,
        &[&encode_fields(&[
            b"strongbox/v1/state/principal",
            p.id.as_bytes(),
            opt_str(&p.tenant_id),
            p.name.as_bytes(),
            p.roles.as_bytes(),
            &p.created_at.to_be_bytes(),
            opt_str(&p.cert_cn),
        ])],
    )
}

/// The API key row's MAC: everything but `last_used_at` (bookkeeping).
pub fn api_key_mac(key: &SecretKey, k: &ApiKeyRow) -> [u8; 32] {
    crypto::hmac_sha256(
        key,
        &[&encode_fields(&[
            b"strongbox/v1/state/api-key",
            k.key_id.as_bytes(),
            k.principal_id.as_bytes(),
            &k.secret_hash,
            &k.created_at.to_be_bytes(),
            &opt_i64(k.expires_at),
            &opt_i64(k.revoked_at),
        ])],
    )
}

fn check(
    what: impl FnOnce() -> String,
    stored: &Option<Vec<u8>>,
    expected: &[u8; 32],
) -> Result<()> {
    match stored {
        Some(mac) if crypto::ct_eq(mac, expected) => Ok(()),
        _ => {
            let e = Error::Corrupt(format!(
                "{}: the stored security state fails its MAC: it was edited outside Strongbox",
                what()
            ));
            tracing::error!(target: "strongbox::tamper", error = %e, "SECURITY STATE TAMPERING DETECTED");
            Err(e)
        }
    }
}

/// Checks a loaded tenant row.
pub fn check_tenant(key: &SecretKey, t: &TenantRow) -> Result<()> {
    check(|| format!("tenant '{}'", t.id), &t.mac, &tenant_mac(key, t))
}

/// Checks a loaded principal row.
pub fn check_principal(key: &SecretKey, p: &PrincipalRow) -> Result<()> {
    check(
        || format!("principal {}", p.id),
        &p.mac,
        &principal_mac(key, p),
    )
}

/// Checks a loaded API key row.
pub fn check_api_key(key: &SecretKey, k: &ApiKeyRow) -> Result<()> {
    check(
        || format!("API key {}", k.key_id),
        &k.mac,
        &api_key_mac(key, k),
    )
}

/// Tenant `id`, its MAC checked.
pub fn tenant(conn: &dyn Tx, keys: &Keyring, id: &str) -> Result<Option<TenantRow>> {
    let Some(row) = conn.tenant_get(id)? else {
        return Ok(None);
    };
    check_tenant(&*keys.state_key(conn)?, &row)?;
    Ok(Some(row))
}

/// Principal `id`, its MAC checked.
pub fn principal(conn: &dyn Tx, keys: &Keyring, id: &str) -> Result<Option<PrincipalRow>> {
    let Some(row) = conn.principal_get(id)? else {
        return Ok(None);
    };
    check_principal(&*keys.state_key(conn)?, &row)?;
    Ok(Some(row))
}

/// API key `key_id` and its principal, both MACs checked.
pub fn api_key(
    conn: &dyn Tx,
    keys: &Keyring,
    key_id: &str,
) -> Result<Option<(ApiKeyRow, PrincipalRow)>> {
    let Some((k, p)) = conn.api_key_lookup(key_id)? else {
        return Ok(None);
    };
    let key = keys.state_key(conn)?;
    check_api_key(&key, &k)?;
    check_principal(&key, &p)?;
    Ok(Some((k, p)))
}

/// Recomputes tenant `id`'s MAC from the row as stored now: call after
/// every change to its security state, in the same transaction.
pub fn seal_tenant(conn: &dyn Tx, keys: &Keyring, id: &str) -> Result<()> {
    if let Some(row) = conn.tenant_get(id)? {
        conn.tenant_set_mac(id, &tenant_mac(&*keys.state_key(conn)?, &row))?;
    }
    Ok(())
}

/// Recomputes principal `id`'s MAC from the row as stored now.
pub fn seal_principal(conn: &dyn Tx, keys: &Keyring, id: &str) -> Result<()> {
    if let Some(row) = conn.principal_get(id)? {
        conn.principal_set_mac(id, &principal_mac(&*keys.state_key(conn)?, &row))?;
    }
    Ok(())
}

/// Recomputes API key `key_id`'s MAC from the row as stored now.
pub fn seal_api_key(conn: &dyn Tx, keys: &Keyring, key_id: &str) -> Result<()> {
    if let Some((row, _)) = conn.api_key_lookup(key_id)? {
        conn.api_key_set_mac(key_id, &api_key_mac(&*keys.state_key(conn)?, &row))?;
    }
    Ok(())
}

/// Seals every row of a vault that predates row MACs, once: afterwards a
/// missing MAC is refused like a wrong one, so NULLing a MAC gains nothing.
pub fn seal_unsealed(conn: &dyn Tx, keys: &Keyring) -> Result<()> {
    if conn.meta_get(SEALED_META)?.is_some() {
        return Ok(());
    }
    for id in conn.tenant_ids()? {
        seal_tenant(conn, keys, &id)?;
    }
    for p in conn.principals_all()? {
        seal_principal(conn, keys, &p.id)?;
    }
    for k in conn.api_keys_all()? {
        seal_api_key(conn, keys, &k.key_id)?;
    }
    conn.meta_put(SEALED_META, b"1")
}
