//! One call being served, and the entry it will be recorded as.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Entry, Outcome};
use crate::crypto;

/// One call being served: what its audit entry will say. Made by `api`
/// when the call arrives; filled in as the caller, tenant and resource
/// become known; recorded exactly once.
#[derive(Debug)]
pub struct Call {
    pub request_id: String,
    pub time: i64,
    pub purpose: String,
    pub peer: String,
    who: Mutex<Who>,
    recorded: AtomicBool,
}

#[derive(Debug, Default, Clone)]
struct Who {
    action: &'static str,
    principal: String,
    tenant: String,
    resource: String,
}

impl Call {
    pub fn new(request_id: String, action: &'static str, purpose: String, peer: String) -> Self {
        Call {
            request_id,
            time: crate::now_ms(),
            purpose,
            peer,
            who: Mutex::new(Who {
                action,
                ..Who::default()
            }),
            recorded: AtomicBool::new(false),
        }
    }

    /// A call the server makes itself (housekeeping), recorded as
    /// principal `system`.
    pub fn system(action: &'static str) -> Self {
        let call = Call::new(
            hex::encode(crypto::random_bytes::<8>()),
            action,
            String::new(),
            "internal".into(),
        );
        call.set_principal("system");
        call
    }

    fn who(&self) -> std::sync::MutexGuard<'_, Who> {
        self.who.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The action the call was authorized for, once it is known (an RPC
    /// may be authorized as one of several actions).
    pub fn set_action(&self, action: &'static str) {
        self.who().action = action;
    }

    pub fn set_principal(&self, id: &str) {
        self.who().principal = id.to_owned();
    }

    /// The principal id the call acts as (empty before authentication).
    pub fn principal(&self) -> String {
        self.who().principal.clone()
    }

    /// Appends `note` to the resource (e.g. the legal hold that refused it).
    pub fn note_resource(&self, note: &str) {
        let mut who = self.who();
        who.resource.push(' ');
        who.resource.push_str(note);
    }

    /// The tenant the call acted in (empty if none).
    pub fn tenant(&self) -> String {
        self.who().tenant.clone()
    }

    pub fn set_tenant(&self, tenant: &str) {
        self.who().tenant = tenant.to_owned();
    }

    /// What the call touches: never a value or a plaintext subject id.
    pub fn set_resource(&self, resource: String) {
        self.who().resource = resource;
    }

    /// Whether the call's entry has been committed.
    pub fn is_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// Marks the entry committed (after the transaction holding it commits).
    pub fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }

    /// The entry for this call with `outcome` and `code` (no seq or MAC yet).
    pub fn entry(&self, outcome: Outcome, code: i32) -> Entry {
        let who = self.who().clone();
        Entry {
            seq: 0,
            time: self.time,
            request_id: self.request_id.clone(),
            principal: who.principal,
            tenant: who.tenant,
            action: who.action.to_owned(),
            resource: who.resource,
            outcome: outcome.as_str().to_owned(),
            code,
            purpose: self.purpose.clone(),
            peer: self.peer.clone(),
            mac: Vec::new(),
            lane: 0,
        }
    }
}
