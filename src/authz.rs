//! Authorization: roles, actions, the one permission table, and the
//! [`Permit`] that proves a check passed. Deny by default: an action is
//! allowed only if the table lists it for one of the caller's roles. Use
//! cases that touch tenant data take a `&Permit`, and only this module can
//! make one.

use std::fmt;

use crate::error::{Error, Result};
use crate::ids::TenantId;

/// A role a principal holds. `Operator` is a platform role; the others are
/// held within one tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Operator,
    Admin,
    Writer,
    Reader,
    PrivacyOfficer,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Operator,
        Role::Admin,
        Role::Writer,
        Role::Reader,
        Role::PrivacyOfficer,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::PrivacyOfficer => "privacy-officer",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "roles",
                    format!(
                        "unknown role '{s}'; roles are {}",
                        Role::ALL.map(Role::as_str).join(", ")
                    ),
                )
            })
    }

    /// Whether the role is held across tenants.
    pub fn is_platform(self) -> bool {
        self == Role::Operator
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a caller can ask of the vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    TenantCreate,
    TenantList,
    TenantGet,
    TenantShred,
    TenantCancelShred,
    /// Create a tenant's first admin, or an admin once a break-glass
    /// recovery has taken effect (the operator's only ways in).
    TenantBootstrapAdmin,
    /// Ask for a break-glass admin recovery (effective after a delay).
    TenantAdminRecovery,
    /// Call off a pending admin recovery.
    TenantAdminRecoveryCancel,
    /// Place and release a legal hold on a whole tenant.
    TenantHold,
    TenantRelease,
    /// Place and release a legal hold on a subject.
    SubjectHold,
    SubjectRelease,
    /// See a tenant's legal holds.
    HoldList,
    /// Set the tenant's retention policy for a category.
    RetentionSet,
    /// Set the platform's retention default and cap for a category.
    RetentionDefault,
    /// See the retention in force, and preview what would expire.
    RetentionList,
    RetentionPreview,
    /// Record a subject's activity (retention by last activity).
    SubjectTouch,
    /// Take an online backup of the vault.
    Backup,
    PrincipalCreate,
    PrincipalList,
    ApiKeyCreate,
    ApiKeyRevoke,
    RecordPut,
    RecordDelete,
    RecordGet,
    RecordList,
    SubjectExport,
    SubjectShred,
    ReceiptVerify,
    AuditList,
    AuditVerify,
    KeyRotate,
    KeyStatus,
    KeyRotateRoot,
    KeyPolicy,
    KeyReencrypt,
}

impl Action {
    pub const ALL: [Action; 37] = [
        Action::TenantCreate,
        Action::TenantList,
        Action::TenantGet,
        Action::TenantShred,
        Action::TenantCancelShred,
        Action::TenantBootstrapAdmin,
        Action::TenantAdminRecovery,
        Action::TenantAdminRecoveryCancel,
        Action::TenantHold,
        Action::TenantRelease,
        Action::SubjectHold,
        Action::SubjectRelease,
        Action::HoldList,
        Action::RetentionSet,
        Action::RetentionDefault,
        Action::RetentionList,
        Action::RetentionPreview,
        Action::SubjectTouch,
        Action::Backup,
        Action::PrincipalCreate,
        Action::PrincipalList,
        Action::ApiKeyCreate,
        Action::ApiKeyRevoke,
        Action::RecordPut,
        Action::RecordDelete,
        Action::RecordGet,
        Action::RecordList,
        Action::SubjectExport,
        Action::SubjectShred,
        Action::ReceiptVerify,
        Action::AuditList,
        Action::AuditVerify,
        Action::KeyRotate,
        Action::KeyStatus,
        Action::KeyRotateRoot,
        Action::KeyPolicy,
        Action::KeyReencrypt,
    ];

    /// The name used in messages and (later) the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::TenantCreate => "tenant.create",
            Action::TenantList => "tenant.list",
            Action::TenantGet => "tenant.get",
            Action::TenantShred => "tenant.shred",
            Action::TenantCancelShred => "tenant.cancel-shred",
            Action::TenantBootstrapAdmin => "tenant.bootstrap-admin",
            Action::TenantAdminRecovery => "tenant.admin-recovery",
            Action::TenantAdminRecoveryCancel => "tenant.admin-recovery.cancel",
            Action::TenantHold => "tenant.hold",
            Action::TenantRelease => "tenant.release",
            Action::SubjectHold => "subject.hold",
            Action::SubjectRelease => "subject.release",
            Action::HoldList => "hold.list",
            Action::RetentionSet => "retention.set",
            Action::RetentionDefault => "retention.default",
            Action::RetentionList => "retention.list",
            Action::RetentionPreview => "retention.preview",
            Action::SubjectTouch => "subject.touch",
            Action::Backup => "vault.backup",
            Action::PrincipalCreate => "principal.create",
            Action::PrincipalList => "principal.list",
            Action::ApiKeyCreate => "api-key.create",
            Action::ApiKeyRevoke => "api-key.revoke",
            Action::RecordPut => "record.put",
            Action::RecordDelete => "record.delete",
            Action::RecordGet => "record.get",
            Action::RecordList => "record.list",
            Action::SubjectExport => "subject.export",
            Action::SubjectShred => "subject.shred",
            Action::ReceiptVerify => "receipt.verify",
            Action::AuditList => "audit.list",
            Action::AuditVerify => "audit.verify",
            Action::KeyRotate => "key.rotate",
            Action::KeyStatus => "key.status",
            Action::KeyRotateRoot => "key.rotate-root",
            Action::KeyPolicy => "key.policy",
            Action::KeyReencrypt => "key.reencrypt",
        }
    }

    /// Whether the action is aimed at one tenant (as opposed to the platform).
    pub fn is_tenant_scoped(self) -> bool {
        !matches!(
            self,
            Action::TenantCreate
                | Action::TenantList
                | Action::AuditList
                | Action::AuditVerify
                | Action::KeyRotateRoot
                | Action::RetentionDefault
                | Action::Backup
        )
    }
}

use Action as A;

/// The permission table: SPEC.md's role table as data. README.md and
/// ARCHITECTURE.md show the same table; a test checks every cell over gRPC.
pub const PERMISSIONS: &[(Role, &[Action])] = &[
    (
        Role::Operator,
        &[
            A::TenantCreate,
            A::TenantList,
            A::TenantGet,
            A::TenantShred,
            A::TenantCancelShred,
            A::TenantBootstrapAdmin,
            A::TenantAdminRecovery,
            A::TenantAdminRecoveryCancel,
            A::TenantHold,
            A::TenantRelease,
            A::HoldList,
            A::RetentionDefault,
            A::RetentionList,
            A::RetentionPreview,
            A::Backup,
            A::ReceiptVerify,
            A::AuditList,
            A::AuditVerify,
            A::KeyStatus,
            A::KeyRotateRoot,
        ],
    ),
    (
        Role::Admin,
        &[
            A::TenantGet,
            A::TenantAdminRecoveryCancel,
            A::TenantHold,
            A::TenantRelease,
            A::SubjectHold,
            A::SubjectRelease,
            A::HoldList,
            A::RetentionSet,
            A::RetentionList,
            A::RetentionPreview,
            A::PrincipalCreate,
            A::PrincipalList,
            A::ApiKeyCreate,
            A::ApiKeyRevoke,
            A::KeyRotate,
            A::KeyStatus,
            A::KeyPolicy,
            A::KeyReencrypt,
        ],
    ),
    (
        Role::Writer,
        &[A::RecordPut, A::RecordDelete, A::SubjectTouch],
    ),
    (Role::Reader, &[A::RecordGet, A::RecordList]),
    (
        Role::PrivacyOfficer,
        &[
            A::SubjectExport,
            A::SubjectShred,
            A::ReceiptVerify,
            A::SubjectHold,
            A::SubjectRelease,
            A::HoldList,
            A::RetentionList,
            A::RetentionPreview,
        ],
    ),
    (
        Role::Auditor,
        &[
            A::ReceiptVerify,
            A::AuditList,
            A::AuditVerify,
            A::HoldList,
            A::RetentionList,
            A::RetentionPreview,
        ],
    ),
];

/// Whether `role` may perform `action`.
pub fn allows(role: Role, action: Action) -> bool {
    PERMISSIONS
        .iter()
        .any(|(r, actions)| *r == role && actions.contains(&action))
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub id: String,
    pub name: String,
    /// `None` for platform principals.
    pub tenant: Option<TenantId>,
    pub roles: Vec<Role>,
    /// If set, its keys are valid only with a client certificate of this
    /// common name.
    pub cert_cn: Option<String>,
}

/// Proof that `principal` may perform `action` (on `tenant`). Only
/// [`authorize`] constructs one.
#[derive(Debug)]
pub struct Permit {
    action: Action,
    tenant: Option<TenantId>,
    home: Option<TenantId>,
}

impl Permit {
    pub fn action(&self) -> Action {
        self.action
    }

    /// The tenant the caller belongs to (`None` for platform principals):
    /// what a tenant auditor's queries are confined to.
    pub fn home_tenant(&self) -> Option<&TenantId> {
        self.home.as_ref()
    }

    /// Checks that the permit was granted for `action`: a use case demands
    /// the permit for its own action, so it cannot be run on the strength
    /// of another action's permit.
    pub fn require(&self, action: Action) -> Result<()> {
        self.require_any(&[action])
    }

    /// [`Permit::require`] for a use case that serves several actions.
    pub fn require_any(&self, actions: &[Action]) -> Result<()> {
        if actions.contains(&self.action) {
            return Ok(());
        }
        let wanted: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        Err(Error::Internal(format!(
            "a {} permit was presented for {}",
            self.action.as_str(),
            wanted.join(" or ")
        )))
    }

    /// The tenant the permit covers, once [`Permit::require`] passed for
    /// `action`.
    pub fn tenant_for(&self, action: Action) -> Result<&TenantId> {
        self.require(action)?;
        self.tenant()
    }

    /// The tenant the permit covers. Tenant-scoped actions always have one.
    fn tenant(&self) -> Result<&TenantId> {
        self.tenant.as_ref().ok_or_else(|| {
            Error::Internal(format!("{} permit without a tenant", self.action.as_str()))
        })
    }
}

/// The message for a tenant the caller cannot see: the same whether it
/// exists in another scope or not at all.
pub fn tenant_not_found(tenant: &TenantId) -> Error {
    Error::NotFound(format!("tenant '{tenant}' not found"))
}

/// Decides whether `principal` may perform `action` on `tenant`.
///
/// A tenant principal naming another tenant gets `NotFound`, exactly as for
/// a tenant that does not exist; a missing role gets `PermissionDenied`.
pub fn authorize(
    principal: &Principal,
    action: Action,
    tenant: Option<&TenantId>,
) -> Result<Permit> {
    if action.is_tenant_scoped() && tenant.is_none() {
        return Err(Error::invalid("tenant", "is required"));
    }
    if let (Some(home), Some(target)) = (&principal.tenant, tenant)
        && home != target
    {
        return Err(tenant_not_found(target));
    }
    if !principal.roles.iter().any(|r| allows(*r, action)) {
        let roles: Vec<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
        return Err(Error::PermissionDenied(format!(
            "role {} may not {}",
            roles.join("+"),
            action.as_str()
        )));
    }
    Ok(Permit {
        action,
        tenant: tenant.cloned(),
        home: principal.tenant.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: Option<&str>, roles: &[Role]) -> Principal {
        Principal {
            id: "p".into(),
            name: "p".into(),
            tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
            roles: roles.to_vec(),
            cert_cn: None,
        }
    }

    #[test]
    fn fail_a_permit_presented_for_another_action() {
        let t = TenantId::parse("t").unwrap();
        let writer = principal(Some("t"), &[Role::Writer, Role::Reader]);
        let put = authorize(&writer, Action::RecordPut, Some(&t)).unwrap();
        assert_eq!(put.tenant_for(Action::RecordPut).unwrap(), &t);
        for other in Action::ALL.into_iter().filter(|a| *a != Action::RecordPut) {
            assert!(put.require(other).is_err(), "{other:?}");
            assert!(put.tenant_for(other).is_err(), "{other:?}");
        }
        assert!(
            put.require_any(&[Action::RecordGet, Action::RecordPut])
                .is_ok()
        );
    }

    #[test]
    fn operator_never_touches_record_data() {
        for a in [A::RecordGet, A::RecordList, A::RecordPut, A::SubjectExport] {
            assert!(!allows(Role::Operator, a), "{a:?}");
        }
    }

    #[test]
    fn deny_by_default_for_every_unlisted_pair() {
        // Written out from SPEC.md's role table by hand, independently of
        // PERMISSIONS: every (role, action) pair not here must be refused,
        // and every one here allowed.
        let expected: &[(&str, &[&str])] = &[
            (
                "operator",
                &[
                    "tenant.create",
                    "tenant.list",
                    "tenant.get",
                    "tenant.shred",
                    "tenant.cancel-shred",
                    "tenant.bootstrap-admin",
                    "tenant.admin-recovery",
                    "tenant.admin-recovery.cancel",
                    "tenant.hold",
                    "tenant.release",
                    "hold.list",
                    "retention.default",
                    "retention.list",
                    "retention.preview",
                    "vault.backup",
                    "receipt.verify",
                    "audit.list",
                    "audit.verify",
                    "key.status",
                    "key.rotate-root",
                ],
            ),
            (
                "admin",
                &[
                    "tenant.get",
                    "tenant.admin-recovery.cancel",
                    "tenant.hold",
                    "tenant.release",
                    "subject.hold",
                    "subject.release",
                    "hold.list",
                    "retention.set",
                    "retention.list",
                    "retention.preview",
                    "principal.create",
                    "principal.list",
                    "api-key.create",
                    "api-key.revoke",
                    "key.rotate",
                    "key.status",
                    "key.policy",
                    "key.reencrypt",
                ],
            ),
            ("writer", &["record.put", "record.delete", "subject.touch"]),
            ("reader", &["record.get", "record.list"]),
            (
                "privacy-officer",
                &[
                    "subject.export",
                    "subject.shred",
                    "receipt.verify",
                    "subject.hold",
                    "subject.release",
                    "hold.list",
                    "retention.list",
                    "retention.preview",
                ],
            ),
            (
                "auditor",
                &[
                    "receipt.verify",
                    "audit.list",
                    "audit.verify",
                    "hold.list",
                    "retention.list",
                    "retention.preview",
                ],
            ),
        ];
        for role in Role::ALL {
            let listed = expected
                .iter()
                .find(|(r, _)| *r == role.as_str())
                .map(|(_, a)| *a)
                .unwrap_or(&[]);
            for action in Action::ALL {
                assert_eq!(
                    allows(role, action),
                    listed.contains(&action.as_str()),
                    "{role} × {}",
                    action.as_str()
                );
            }
        }
    }

    #[test]
    fn other_tenant_is_not_found_before_role_check() {
        let t_a = TenantId::parse("a").unwrap();
        let t_b = TenantId::parse("b").unwrap();
        let p = principal(Some("a"), &[Role::Reader]);
        assert!(authorize(&p, A::RecordGet, Some(&t_a)).is_ok());
        assert!(matches!(
            authorize(&p, A::RecordGet, Some(&t_b)),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            authorize(&p, A::RecordPut, Some(&t_a)),
            Err(Error::PermissionDenied(_))
        ));
        // Platform actions are denied to tenant principals by role.
        assert!(matches!(
            authorize(&p, A::TenantList, None),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn permit_carries_the_tenant() {
        let t = TenantId::parse("a").unwrap();
        let op = principal(None, &[Role::Operator]);
        let permit = authorize(&op, A::TenantShred, Some(&t)).unwrap();
        assert_eq!(permit.tenant().unwrap(), &t);
    }
}
