//! The arguments of the client command groups (`tenant`, `principal`,
//! `record`, `subject`, `retention`, `tenant hold`); what they do is in
//! `cli::commands`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Create a tenant with fresh keys.
    Create {
        tenant: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List every tenant.
    List,
    /// Show one tenant.
    Get { tenant: String },
    /// Suspend a tenant and destroy its keys after a grace period.
    Shred {
        tenant: String,
        /// Grace period, e.g. `7d`, `12h`, `0s` (default: the server's, 7 days).
        #[arg(long)]
        grace: Option<String>,
    },
    /// Cancel a scheduled shred and reactivate the tenant.
    CancelShred { tenant: String },
    /// Break-glass (operator): ask to create an admin in a tenant whose
    /// admins lost their keys. Takes effect after the admin recovery delay
    /// (24 h by default); audited; shown by `tenant get`.
    RecoverAdmin { tenant: String },
    /// Call off a pending admin recovery (the tenant's admin, or an operator).
    CancelRecovery { tenant: String },
    /// Place a legal hold on the whole tenant (admin, operator); prints its id.
    Hold {
        tenant: String,
        /// Why: a case or ticket reference, never personal data (<= 256 bytes).
        #[arg(long)]
        reason: String,
    },
    /// Release a tenant-wide hold (without --hold: every tenant-wide hold).
    Release {
        tenant: String,
        #[arg(long = "hold")]
        hold: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum PrincipalCmd {
    /// Create a principal; prints its API key once.
    Create {
        #[arg(long)]
        tenant: String,
        /// Role to grant (repeat for several): admin, writer, reader, privacy-officer, auditor.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The key expires after this long, e.g. `90d` (default: never).
        #[arg(long)]
        expires_in: Option<String>,
        /// Accept its keys only over mTLS with a client certificate of this common name.
        #[arg(long)]
        client_cert_cn: Option<String>,
        /// Register the key its holder made with `strongbox enrol` (sbe_...)
        /// instead of issuing one: the key is then never shown to you.
        #[arg(long)]
        enrolment: Option<String>,
        name: String,
    },
    /// List a tenant's principals and their keys (never the secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Issue another key for a principal (rotation step 1); prints it once.
    CreateKey {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        expires_in: Option<String>,
        principal_id: String,
    },
    /// Revoke a key (rotation step 2): the next call with it is refused.
    RevokeKey {
        #[arg(long)]
        tenant: String,
        key_id: String,
    },
}

/// Which record: tenant, optional subject, category, key.
#[derive(Args, Clone)]
pub struct RecordAddrArgs {
    #[arg(long)]
    pub tenant: String,
    /// Subject id (omit for a tenant-level record).
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub category: String,
    #[arg(long)]
    pub key: String,
}

#[derive(Subcommand)]
pub enum RecordCmd {
    /// Store a value (from --value, --file, or stdin).
    Put {
        #[command(flatten)]
        addr: RecordAddrArgs,
        #[arg(long, conflicts_with = "file")]
        value: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value = "")]
        content_type: String,
        /// Only if the record is at this version (0: only if absent).
        #[arg(long)]
        expected_version: Option<u64>,
        /// Store data for a subject that was shredded.
        #[arg(long)]
        reinstate_erased_subject: bool,
    },
    /// Print a record's raw value on stdout.
    Get {
        #[command(flatten)]
        addr: RecordAddrArgs,
    },
    /// Delete a record.
    Delete {
        #[command(flatten)]
        addr: RecordAddrArgs,
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// List records (metadata only).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        category: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SubjectCmd {
    /// Everything stored about a subject, as JSON on stdout.
    Export {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
    },
    /// Crypto-shred a subject; prints the deletion receipt.
    Shred {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
    },
    /// Check a deletion receipt (JSON from `subject shred --json`, a file or stdin).
    VerifyReceipt {
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Place a legal hold on a subject (privacy officer, admin); prints its id.
    Hold {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
        /// Why: a case or ticket reference, never personal data (<= 256 bytes).
        #[arg(long)]
        reason: String,
    },
    /// The person was active: their records kept by last activity live on
    /// from now (writer).
    Touch {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
    },
    /// Release a hold on a subject (without --hold: every hold on it).
    Release {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
        #[arg(long = "hold")]
        hold: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RetentionCmd {
    /// Keep a category's records DURATION after their last write, or after
    /// the subject's last activity (tenant admin; at most the platform cap).
    Set {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        category: String,
        /// e.g. `365d`, `12months`, `30s`.
        #[arg(long)]
        keep: String,
        /// `write` (default) or `last-activity`.
        #[arg(long, default_value = "write")]
        after: String,
    },
    /// The platform's default window (by last write) and cap for a
    /// category (operator). A field not given keeps its value.
    Default {
        #[arg(long)]
        category: String,
        #[arg(long)]
        keep: Option<String>,
        #[arg(long)]
        max: Option<String>,
    },
    /// Every category with a policy, default or cap, and what is in force.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Dry run: what would expire within DURATION (default: what is due
    /// now), per category and day; and what has expired.
    Preview {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        within: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum HoldCmd {
    /// Every legal hold of a tenant: subject and tenant-wide.
    List {
        #[arg(long)]
        tenant: String,
    },
}
