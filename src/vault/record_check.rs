//! Record rollback detection: `audit verify --records`.
//!
//! A record row holds its own version, bound into its ciphertext's AAD, so
//! an edit of the bytes fails authentication; but putting back an older
//! (version, ciphertext) pair of the same record, or un-deleting it, leaves
//! a row that opens and reads as that older state. Nothing in the row can
//! tell. The audit chain can: every successful put and delete records the
//! version it produced (`record:v<N>:<owner>/<category>/<key>`, with
//! `v<N>-deleted` for a delete), under the chain's MACs and anchor. This check
//! replays those writes and compares each stored record under a live data
//! key with the last one:
//!
//! - stored version older than the last write: **rollback**;
//! - stored live where the last write deleted it: **resurrection**;
//! - stored deleted where the last write put it: **deleted outside Strongbox**
//!   (unless the retention sweep expired it: those tombstones say so);
//! - stored version newer than the last write: **ahead of the trail** (a
//!   write whose entry is missing, or one made outside Strongbox).
//!
//! A subject shred ends its records' history (a reinstated subject starts
//! again). Records with no audited write (written before this existed, or
//! whose entries were pruned by `audit_retention`) are counted, not judged.

use std::collections::HashMap;

use super::{Vault, record_resource};
use crate::audit;
use crate::authz::{Action, Permit};
use crate::error::Result;
use crate::store;

/// Problems listed at most; the count says how many there were.
const MAX_LISTED: usize = 100;

/// The resource suffix of a delete's entry.
const DELETED: &str = "-deleted";

/// What the records check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordCheck {
    /// Records under a live data key that were compared.
    pub checked: u64,
    /// Of those, records with no audited write to compare with.
    pub unaudited: u64,
    /// How many disagreed with the trail, and the first few.
    pub problem_count: u64,
    pub problems: Vec<String>,
}

/// The audit resource of a write that left record `path` (owner/category/
/// key, as [`record_resource`] names it) at `version`:
/// `record:v<N>[-deleted]:<path>`. Entries from before versions were
/// recorded read `record:<path>`, and a path never starts with `v<digit>`
/// (owners are hex or `tenant`), so the two cannot be confused.
pub(super) fn versioned(resource: &str, version: u64, deleted: bool) -> String {
    let path = resource.strip_prefix("record:").unwrap_or(resource);
    let tag = if deleted { DELETED } else { "" };
    format!("record:v{version}{tag}:{path}")
}

/// `record:v<N>[-deleted]:<path>` → (path, N, deleted).
fn parse_write(resource: &str) -> Option<(&str, u64, bool)> {
    let rest = resource.strip_prefix("record:v")?;
    let (tail, path) = rest.split_once(':')?;
    let (n, deleted) = match tail.strip_suffix(DELETED) {
        Some(n) => (n, true),
        None => (tail, false),
    };
    Some((path, n.parse().ok()?, deleted))
}

/// The last audited state of each record, by (tenant, owner) then
/// `category/key`.
type Trail = HashMap<(String, String), HashMap<String, (u64, bool)>>;

fn replay(trail: &mut Trail, tenant: &str, action: &str, resource: &str) {
    if action == Action::SubjectShred.as_str() {
        if let Some(owner) = resource.strip_prefix("subject:") {
            trail.remove(&(tenant.to_owned(), owner.to_owned()));
        }
        return;
    }
    if let Some((path, version, deleted)) = parse_write(resource)
        && let Some((owner, rest)) = path.split_once('/')
    {
        trail
            .entry((tenant.to_owned(), owner.to_owned()))
            .or_default()
            .insert(rest.to_owned(), (version, deleted));
    }
}

fn judge(r: &store::StoredRecord, last: (u64, bool)) -> Option<String> {
    let (version, deleted) = last;
    let name = || {
        format!(
            "tenant '{}' {}",
            r.tenant,
            record_resource(&r.owner, &r.category, &r.key)
        )
    };
    if r.version < version {
        Some(format!(
            "rollback: {} is at version {}, the trail's last write made version {version}",
            name(),
            r.version
        ))
    } else if r.version > version {
        Some(format!(
            "ahead of the trail: {} is at version {}, the trail's last write made version {version} (an entry is missing, or it was written outside Strongbox)",
            name(),
            r.version
        ))
    } else if deleted && !r.deleted {
        Some(format!(
            "resurrection: {} was deleted at version {version} and is stored live",
            name()
        ))
    } else if !deleted && r.deleted && !r.expired {
        Some(format!(
            "deleted outside Strongbox: {} is stored deleted, the trail's last write put version {version}",
            name()
        ))
    } else {
        None
    }
}

impl Vault {
    /// Verifies the chain and then every stored record against it (see the
    /// module doc): the platform's records, or a tenant auditor's own.
    pub async fn verify_records(&self, permit: &Permit) -> Result<(audit::Report, RecordCheck)> {
        self.verify_chain(permit, true).await
    }

    /// The chain's verification as the permit may see it (a tenant
    /// auditor: its own tenant's view), and with `records` the records
    /// check too.
    pub(super) async fn verify_chain(
        &self,
        permit: &Permit,
        records: bool,
    ) -> Result<(audit::Report, RecordCheck)> {
        permit.require(Action::AuditVerify)?;
        let keys = self.keys.clone();
        // Read before the snapshot: every point in it is then committed.
        let anchor = match self.anchor.clone() {
            Some(a) => {
                let k = self.keys.clone();
                let key = self.store.read(move |c| k.audit_key(c)).await?;
                crate::blocking(move || a.points(&key)).await?
            }
            None => Default::default(),
        };
        let home = permit.home_tenant().map(|t| t.as_str().to_owned());
        self.store
            // One read transaction: the chain and the records are scanned
            // at the same moment.
            .read(move |c| {
                let key = keys.audit_key(c)?;
                let report = audit::verify_anchored(c, &key, &anchor)?;
                let mut check = RecordCheck::default();
                if records && report.problem.is_none() {
                    let mut trail = Trail::new();
                    c.audited_record_writes(home.as_deref(), &mut |t, a, r| {
                        replay(&mut trail, t, a, r)
                    })?;
                    c.live_key_records(home.as_deref(), &mut |r| {
                        check.checked += 1;
                        let owner = if r.owner.is_empty() {
                            "tenant".to_owned()
                        } else {
                            hex::encode(&r.owner)
                        };
                        let last = trail
                            .get(&(r.tenant.clone(), owner))
                            .and_then(|m| m.get(&format!("{}/{}", r.category, r.key)));
                        match last {
                            None => check.unaudited += 1,
                            Some(&last) => {
                                if let Some(p) = judge(&r, last) {
                                    check.problem_count += 1;
                                    if check.problems.len() < MAX_LISTED {
                                        check.problems.push(p);
                                    }
                                }
                            }
                        }
                    })?;
                }
                let report = match &home {
                    None => report,
                    Some(t) => audit::tenant_view(c, t, report)?,
                };
                Ok((report, check))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_names_its_version_and_parses_back() {
        let r = record_resource(&[0xab], "contact", "e@mail@v2");
        assert_eq!(
            parse_write(&versioned(&r, 7, false)),
            Some(("ab/contact/e@mail@v2", 7, false))
        );
        assert_eq!(
            parse_write(&versioned(&r, 8, true)),
            Some(("ab/contact/e@mail@v2", 8, true))
        );
        assert_eq!(parse_write(&r), None, "an entry from before versions");
        let tenant_level = record_resource(&[], "c", "k");
        assert_eq!(parse_write(&tenant_level), None);
        assert_eq!(
            parse_write(&versioned(&tenant_level, 1, false)),
            Some(("tenant/c/k", 1, false))
        );
        assert_eq!(parse_write("subject:ab"), None);
    }

    #[test]
    fn a_shred_ends_the_history() {
        let mut t = Trail::new();
        let r = record_resource(&[1], "c", "k");
        replay(&mut t, "t", "record.put", &versioned(&r, 5, false));
        assert_eq!(t[&("t".into(), "01".into())]["c/k"], (5, false));
        replay(&mut t, "t", "subject.shred", "subject:01");
        assert!(t.is_empty());
    }
}
