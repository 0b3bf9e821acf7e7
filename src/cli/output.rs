//! How the CLI prints: JSON shapes shared by commands, values that may not
//! be UTF-8, and gRPC errors as `CODE: message`.

use serde_json::{Value, json};
use tonic::Code;

use crate::api::pb;
use crate::vault::fmt_time;

pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pub(super) fn describe_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) => format!("{}: {}", code_name(s.code()), s.message()),
        None => format!("{e:#}"),
    }
}

pub(super) fn tenant_state(state: i32) -> &'static str {
    match pb::TenantState::try_from(state) {
        Ok(pb::TenantState::Active) => "active",
        Ok(pb::TenantState::ShredScheduled) => "shred_scheduled",
        Ok(pb::TenantState::Shredded) => "shredded",
        _ => "unknown",
    }
}

pub(super) fn tenant_json(t: &pb::Tenant) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "state": tenant_state(t.state),
        "created_at": fmt_time(t.created_at_unix_ms),
        "shred_at": (t.shred_at_unix_ms != 0).then(|| fmt_time(t.shred_at_unix_ms)),
        "kek_version": t.kek_version,
        "admin_recovery_at": (t.admin_recovery_at_unix_ms != 0).then(|| fmt_time(t.admin_recovery_at_unix_ms)),
    })
}

pub(super) fn tenant_line(t: &pb::Tenant) -> String {
    let mut line = format!(
        "{}\t{}\t{}\tkek v{}\tcreated {}",
        t.id,
        if t.name.is_empty() { "-" } else { &t.name },
        tenant_state(t.state),
        t.kek_version,
        fmt_time(t.created_at_unix_ms)
    );
    if t.shred_at_unix_ms != 0 {
        line.push_str(&format!("\tshred at {}", fmt_time(t.shred_at_unix_ms)));
    }
    if t.admin_recovery_at_unix_ms != 0 {
        line.push_str(&format!(
            "\tADMIN RECOVERY PENDING: the operator may create an admin from {}",
            fmt_time(t.admin_recovery_at_unix_ms)
        ));
    }
    line
}

/// A value as JSON: `value` if it is UTF-8, else `value_hex`.
pub(super) fn value_fields(obj: &mut serde_json::Map<String, Value>, value: &[u8]) {
    match std::str::from_utf8(value) {
        Ok(s) => obj.insert("value".into(), json!(s)),
        Err(_) => obj.insert("value_hex".into(), json!(hex::encode(value))),
    };
}

pub(super) fn record_json(r: &pb::Record) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("tenant".into(), json!(r.tenant));
    obj.insert("subject".into(), json!(r.subject));
    obj.insert("category".into(), json!(r.category));
    obj.insert("key".into(), json!(r.key));
    obj.insert("version".into(), json!(r.version));
    obj.insert("content_type".into(), json!(r.content_type));
    value_fields(&mut obj, &r.value);
    obj.insert("created_at".into(), json!(fmt_time(r.created_at_unix_ms)));
    obj.insert("updated_at".into(), json!(fmt_time(r.updated_at_unix_ms)));
    Value::Object(obj)
}

pub(super) fn receipt_json(r: &pb::DeletionReceipt) -> Value {
    json!({
        "receipt_id": r.receipt_id,
        "tenant": r.tenant,
        "subject_blind_id": r.subject_blind_id,
        "destroyed_key_ids": r.destroyed_key_ids,
        "records_made_unreadable": r.records_made_unreadable,
        "shredded_at_unix_ms": r.shredded_at_unix_ms,
        "shredded_at": fmt_time(r.shredded_at_unix_ms),
        "reason": if r.reason.is_empty() { "request" } else { &r.reason },
        "mac": r.mac,
        "erasure": r.erasure,
    })
}

/// Reads a receipt back from [`receipt_json`]'s shape.
pub(super) fn receipt_from_json(v: &Value) -> anyhow::Result<pb::DeletionReceipt> {
    let s = |k: &str| -> anyhow::Result<String> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("receipt: field '{k}' is missing or not a string"))
    };
    let n = |k: &str| -> anyhow::Result<u64> {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow::anyhow!("receipt: field '{k}' is missing or not a number"))
    };
    let keys = v
        .get("destroyed_key_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("receipt: field 'destroyed_key_ids' is missing"))?
        .iter()
        .map(|k| k.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow::anyhow!("receipt: 'destroyed_key_ids' must hold strings"))?;
    Ok(pb::DeletionReceipt {
        receipt_id: s("receipt_id")?,
        tenant: s("tenant")?,
        subject_blind_id: s("subject_blind_id")?,
        destroyed_key_ids: keys,
        records_made_unreadable: n("records_made_unreadable")?,
        shredded_at_unix_ms: n("shredded_at_unix_ms")? as i64,
        mac: s("mac")?,
        // Receipts saved before reasons existed were all requests.
        reason: s("reason").unwrap_or_default(),
        // Words, not verified.
        erasure: s("erasure").unwrap_or_default(),
    })
}
