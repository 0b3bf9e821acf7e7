//! Conversions between domain types and protobuf messages, and parsing of
//! optional request fields.

use super::pb;
use crate::audit;
use crate::error::{Error, Result};
use crate::ids::SubjectId;
use crate::store::TenantState;
use crate::vault::{
    ApiKeyInfo, DeletionReceipt, PrincipalInfo, RecordValue, ShredReason, TenantInfo,
    TenantKeyStatus,
};

/// An empty subject field means a tenant-level record.
pub(super) fn opt_subject(s: &str) -> Result<Option<SubjectId>> {
    if s.is_empty() {
        Ok(None)
    } else {
        SubjectId::parse(s).map(Some)
    }
}

/// A subject field that must be present.
pub(super) fn subject(s: &str) -> Result<SubjectId> {
    if s.is_empty() {
        return Err(Error::invalid("subject", "is required"));
    }
    SubjectId::parse(s)
}

pub(super) fn tenant(t: TenantInfo) -> pb::Tenant {
    pb::Tenant {
        id: t.id,
        name: t.name,
        state: match t.state {
            TenantState::Active => pb::TenantState::Active,
            TenantState::ShredScheduled => pb::TenantState::ShredScheduled,
            TenantState::Shredded => pb::TenantState::Shredded,
        } as i32,
        created_at_unix_ms: t.created_at,
        shred_at_unix_ms: t.shred_at.unwrap_or(0),
        kek_version: t.kek_version,
        admin_recovery_at_unix_ms: t.admin_recovery_at.unwrap_or(0),
    }
}

pub(super) fn record(tenant: &str, subject: &str, v: RecordValue) -> pb::Record {
    pb::Record {
        tenant: tenant.to_owned(),
        subject: subject.to_owned(),
        category: v.category,
        key: v.key,
        // The response buffer leaves the wiping wrapper here, moved, not
        // copied: tonic encodes and drops it right after.
        value: v.value.into_unwiped(),
        content_type: v.content_type,
        version: v.version,
        created_at_unix_ms: v.created_at,
        updated_at_unix_ms: v.updated_at,
    }
}

pub(super) fn receipt_to_pb(r: DeletionReceipt) -> pb::DeletionReceipt {
    pb::DeletionReceipt {
        receipt_id: r.receipt_id,
        tenant: r.tenant,
        subject_blind_id: hex::encode(r.subject_blind_id),
        destroyed_key_ids: r.destroyed_key_ids,
        records_made_unreadable: r.records_made_unreadable,
        shredded_at_unix_ms: r.shredded_at,
        mac: hex::encode(r.mac),
        reason: r.reason.as_str().to_owned(),
        erasure: String::new(),
    }
}

pub(super) fn receipt_from_pb(r: pb::DeletionReceipt) -> Result<DeletionReceipt> {
    let hex_field = |field: &'static str, s: &str| {
        hex::decode(s).map_err(|_| Error::invalid(field, "must be hex"))
    };
    Ok(DeletionReceipt {
        subject_blind_id: hex_field("receipt.subject_blind_id", &r.subject_blind_id)?,
        mac: hex_field("receipt.mac", &r.mac)?,
        receipt_id: r.receipt_id,
        tenant: r.tenant,
        destroyed_key_ids: r.destroyed_key_ids,
        records_made_unreadable: r.records_made_unreadable,
        shredded_at: r.shredded_at_unix_ms,
        reason: match r.reason.as_str() {
            "" | "request" => ShredReason::Request,
            "retention" => ShredReason::Retention,
            _ => {
                return Err(Error::invalid(
                    "receipt.reason",
                    "must be request or retention",
                ));
            }
        },
    })
}

pub(super) fn audit_entry(e: audit::Entry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: e.seq,
        time_unix_ms: e.time,
        request_id: e.request_id,
        principal: e.principal,
        tenant: e.tenant,
        action: e.action,
        resource: e.resource,
        outcome: e.outcome,
        code: e.code,
        purpose: e.purpose,
        peer: e.peer,
        mac: hex::encode(e.mac),
    }
}

pub(super) fn api_key(k: ApiKeyInfo) -> pb::ApiKeyInfo {
    pb::ApiKeyInfo {
        key_id: k.key_id,
        principal_id: k.principal_id,
        created_at_unix_ms: k.created_at,
        expires_at_unix_ms: k.expires_at.unwrap_or(0),
        revoked_at_unix_ms: k.revoked_at.unwrap_or(0),
        last_used_at_unix_ms: k.last_used_at.unwrap_or(0),
    }
}

pub(super) fn principal(p: PrincipalInfo) -> pb::PrincipalInfo {
    pb::PrincipalInfo {
        principal_id: p.principal_id,
        name: p.name,
        roles: p.roles,
        created_at_unix_ms: p.created_at,
        keys: p.keys.into_iter().map(api_key).collect(),
    }
}

pub(super) fn key_status(tenant: &str, s: TenantKeyStatus) -> pb::TenantKeyStatus {
    pb::TenantKeyStatus {
        tenant: tenant.to_owned(),
        current_version: s.current_version,
        data_keys_to_rewrap: s.data_keys_to_rewrap,
        rotation_max_age_seconds: (s.policy.max_age_ms / 1000).max(0) as u64,
        rotation_max_encryptions: s.policy.max_encryptions,
        rotation_policy_is_default: s.policy.default,
        next_rotation_due_unix_ms: s.next_rotation_due,
        reencrypt_jobs: s.reencrypt_jobs,
        reencrypt_corrupt_records: s.reencrypt_corrupt_records,
        min_decryption_version: s.min_decryption_version,
        versions: s
            .versions
            .into_iter()
            .map(|v| pb::KekVersionStatus {
                version: v.version,
                created_at_unix_ms: v.created_at,
                state: if v.retired_at.is_some() {
                    "retired"
                } else if v.version == s.current_version {
                    "active"
                } else {
                    "retiring"
                }
                .into(),
                data_keys: v.data_keys,
                encryptions: v.wraps,
                retired_at_unix_ms: v.retired_at.unwrap_or(0),
                last_used_unix_ms: v.last_used_at.unwrap_or(0),
            })
            .collect(),
    }
}

pub(super) fn hold(h: crate::vault::HoldInfo) -> pb::Hold {
    pb::Hold {
        id: h.id,
        tenant: h.tenant,
        subject_blind_id: h.subject_blind_id.map(hex::encode).unwrap_or_default(),
        reason: h.reason,
        created_at_unix_ms: h.created_at,
        created_by: h.created_by,
    }
}
