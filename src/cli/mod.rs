//! The `strongbox` command line: `serve` runs the server; every other
//! subcommand is a client of the gRPC API, for people and runbooks. Exit
//! status 0 on success; on failure 1, with `error: CODE: message` on stderr.

mod bench;
mod client_args;
mod commands;
mod offline;
mod output;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use bench::{BenchArgs, BenchOp};
pub use client_args::*;

/// Command-line interface of the `strongbox` binary.
#[derive(Parser)]
#[command(
    name = "strongbox",
    version,
    about = "Multi-tenant encrypted data vault",
    propagate_version = true
)]
pub struct Cli {
    /// Server to talk to.
    #[arg(
        long,
        env = "STRONGBOX_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub endpoint: String,
    /// API key (`sbk_…`) to call with.
    #[arg(long, env = "STRONGBOX_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// CA certificate (PEM) that signed the server's, for https endpoints.
    #[arg(long, env = "STRONGBOX_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require mTLS.
    #[arg(long, env = "STRONGBOX_CLIENT_CERT", global = true)]
    pub client_cert: Option<PathBuf>,
    /// Client certificate's private key (PEM).
    #[arg(long, env = "STRONGBOX_CLIENT_KEY", global = true)]
    pub client_key: Option<PathBuf>,
    /// Why you act (a ticket, a runbook step): sent with every call and
    /// recorded in the audit trail. At most 256 printable bytes.
    #[arg(long, env = "STRONGBOX_PURPOSE", global = true)]
    pub purpose: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags that only client commands use.
const CLIENT_FLAGS: [&str; 6] = [
    "endpoint",
    "api_key",
    "ca_cert",
    "client_cert",
    "client_key",
    "purpose",
];

/// Whether the command line names a command that runs without a server
/// (`serve`, `restore`, `enrol`, `completions`, `audit accept-loss`, `key
/// move-root`, `key hsm-check`): its help then shows no client flag, and
/// they are refused.
fn runs_without_a_server(args: &[std::ffi::OsString]) -> bool {
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .filter(|a| !a.starts_with('-'))
        .take(2)
        .collect();
    matches!(
        words.as_slice(),
        ["serve" | "restore" | "enrol" | "completions", ..]
            | ["audit", "accept-loss"]
            | ["key", "move-root" | "hsm-check"]
    )
}

/// The clap command, client flags kept off the commands that do not talk
/// to a server when `offline`.
pub fn command(offline: bool) -> clap::Command {
    let cmd = <Cli as clap::CommandFactory>::command();
    if !offline {
        return cmd;
    }
    cmd.mut_args(|a| {
        if CLIENT_FLAGS.contains(&a.get_id().as_str()) {
            a.global(false).hide(true)
        } else {
            a
        }
    })
}

/// Parses the process's command line.
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = command(runs_without_a_server(&args)).get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create, inspect and shred tenants (operator).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Create principals and their API keys.
    #[command(subcommand)]
    Principal(PrincipalCmd),
    /// Put, get, delete and list records.
    #[command(subcommand)]
    Record(RecordCmd),
    /// Export or shred everything about a subject (privacy officer).
    #[command(subcommand)]
    Subject(SubjectCmd),
    /// Rotate keys and see their state.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Verify or query the audit trail (operator, auditor).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Legal holds (see `subject hold`, `tenant hold`).
    #[command(subcommand)]
    Hold(HoldCmd),
    /// Retention windows per category (admin), platform defaults and caps
    /// (operator), and a dry run of what will expire.
    #[command(subcommand)]
    Retention(RetentionCmd),
    /// Drive a running server with concurrent clients and report throughput.
    Bench(BenchArgs),
    /// An online backup (operator): a consistent snapshot streamed while
    /// writes go on, written to FILE (which must not exist; mode 0600).
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a data directory, offline (no server on it):
    /// writes the database (never over an existing one), replays the shred
    /// ledger so nothing erased after the backup comes back, and audits
    /// the restore. Takes the server's flags (data dir, config, root key).
    Restore(Box<RestoreArgs>),
    /// Print shell completions (bash, zsh, fish, elvish, powershell), e.g.
    /// `strongbox completions bash > /etc/bash_completion.d/strongbox`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Make an API key on this machine, for a principal someone else creates
    /// (e.g. the operator creating your tenant's first admin): writes the key
    /// to FILE (mode 0600) and prints the enrolment to hand on. Needs no server.
    Enrol {
        /// Where to write the key; must not exist.
        #[arg(long)]
        key_out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Rotate a tenant's key-encryption key (tenant admin); old data keys are rewrapped in the background.
    Rotate {
        #[arg(long)]
        tenant: String,
    },
    /// Every KEK version of a tenant: state, data keys and encryptions under it.
    Status {
        #[arg(long)]
        tenant: String,
    },
    /// Rotate the root key (operator): every key under it is rewrapped at once.
    RotateRoot,
    /// Re-encrypt a subject's (or the whole tenant's) records under fresh
    /// data keys and destroy the old keys: for a suspected data-key compromise.
    Reencrypt {
        #[arg(long)]
        tenant: String,
        /// Only this subject (default: every subject and the tenant-level data).
        #[arg(long)]
        subject: Option<String>,
    },
    /// Move the vault's root key from its key file into a PKCS#11 HSM.
    /// Offline: stop the server first; runs on the data directory itself.
    MoveRoot(MoveRootArgs),
    /// Show how the HSM holds the root key (sensitive, never extractable,
    /// generated inside the token). Talks to the token, not the server.
    HsmCheck(Pkcs11Args),
    /// Set when the tenant's KEK rotates automatically, and the minimum
    /// decryption version (tenant admin).
    Policy {
        #[arg(long)]
        tenant: String,
        /// Rotate when the current version is this old, e.g. `90d`.
        #[arg(long)]
        max_age: Option<String>,
        /// Rotate once the current version has made this many encryptions.
        #[arg(long)]
        max_encryptions: Option<u64>,
        /// Refuse data keys still wrapped under KEK versions below this one
        /// (the rewrap job still moves them); 0 removes the minimum.
        #[arg(long)]
        min_decryption_version: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Walk the MAC chain: `ok` with the count and head, or the first bad entry (exit 1).
    Verify {
        /// Also check every stored record against its last audited write:
        /// rollbacks and resurrected deletes (exit 1 if any).
        #[arg(long)]
        records: bool,
    },
    /// Acknowledge a broken audit chain so the vault serves again. Offline:
    /// stop the server first; takes the server's flags (data dir, config,
    /// root key). Keeps the verified stretch, quarantines the rest, and
    /// records the acknowledgement in the chain.
    AcceptLoss(Box<AcceptLossArgs>),
    /// Print entries (JSON lines with --json, ready for a SIEM).
    List {
        /// Only this tenant's entries (an auditor always gets its own).
        #[arg(long)]
        tenant: Option<String>,
        /// Only entries at or after this time: RFC 3339 (`2026-11-01T00:00:00Z`) or an age (`24h`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// ok, denied or failed.
        #[arg(long)]
        outcome: Option<String>,
    },
}

/// Where the root key lives in a PKCS#11 token. The user PIN is read from
/// an environment variable, never a flag.
#[derive(Args, Clone)]
pub struct Pkcs11Args {
    /// PKCS#11 module (the token's library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, requires = "pkcs11_token")]
    pub pkcs11_module: Option<PathBuf>,
    /// Label of the token that holds the root key.
    #[arg(long, requires = "pkcs11_module")]
    pub pkcs11_token: Option<String>,
    /// Label of the root key object in the token (default strongbox-root).
    #[arg(long)]
    pub pkcs11_key_label: Option<String>,
    /// Environment variable holding the token's user PIN (default STRONGBOX_PKCS11_PIN).
    #[arg(long)]
    pub pkcs11_pin_env: Option<String>,
}

impl Pkcs11Args {
    /// The settings, if a module and token were given.
    pub fn config(&self) -> crate::error::Result<Option<crate::rootkey::pkcs11::Pkcs11Config>> {
        crate::config::pkcs11_config(
            self.pkcs11_module.clone(),
            self.pkcs11_token.clone(),
            self.pkcs11_key_label.clone(),
            self.pkcs11_pin_env.clone(),
        )
    }
}

#[derive(Args)]
pub struct AcceptLossArgs {
    /// Why the loss is accepted (an incident number); recorded as the
    /// entry's purpose.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub server: ServeArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file (`strongbox backup --out`).
    #[arg(long, required_unless_present = "apply_ledger")]
    pub from: Option<PathBuf>,
    /// Restore nothing: replay --ledger on the database as it is, after it
    /// was brought back by other means (a PostgreSQL point-in-time
    /// recovery or base backup, a file-system snapshot). Run before any
    /// server serves it.
    #[arg(long, conflicts_with_all = ["from", "without_ledger"], requires = "ledger")]
    pub apply_ledger: bool,
    /// The shred ledger of the vault the backup came from (its server's
    /// --shred-ledger): every key destroyed since is destroyed again.
    #[arg(long, required_unless_present = "without_ledger")]
    pub ledger: Option<PathBuf>,
    /// Restore without a ledger. Subjects and tenants erased after the
    /// backup was taken may be readable again.
    #[arg(long, conflicts_with = "ledger")]
    pub without_ledger: bool,
    #[command(flatten)]
    pub server: ServeArgs,
}

#[derive(Args)]
pub struct MoveRootArgs {
    /// The vault's data directory.
    #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The key file the root key is in now (default DATA_DIR/root.key).
    #[arg(long, conflicts_with = "root_key_env")]
    pub root_key_file: Option<PathBuf>,
    /// Or the environment variable it is in now.
    #[arg(long)]
    pub root_key_env: Option<String>,
    /// The audit anchor file (default DATA_DIR/audit.anchor).
    #[arg(long)]
    pub audit_anchor: Option<PathBuf>,
    /// The vault's PostgreSQL database, when its servers keep it there
    /// (every server stopped first).
    #[arg(long, env = "STRONGBOX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The CA certificate (PEM) of the PostgreSQL server, as `serve`.
    #[arg(long)]
    pub database_ca: Option<PathBuf>,
    #[command(flatten)]
    pub pkcs11: Pkcs11Args,
}

pub use crate::config::LogFormat;

#[derive(Args)]
pub struct ServeArgs {
    /// Data directory (default ./strongbox-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Log lines as `text` (for people) or `json` (one object a line, for
    /// Loki, Elasticsearch, CloudWatch). Level: RUST_LOG.
    /// Default: the config's `log_format`, else text.
    #[arg(long, env = "STRONGBOX_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Listen address (default 127.0.0.1:50051).
    #[arg(long)]
    pub listen: Option<String>,
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Server certificate chain (PEM): serve TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates are required (mTLS).
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Serve plaintext beyond loopback (only behind a TLS-terminating proxy).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Take the root key (64 hex characters) from this environment variable
    /// instead of the key file.
    #[arg(long, conflicts_with = "pkcs11_module")]
    pub root_key_env: Option<String>,
    /// The audit chain's anchor file (default DATA_DIR/audit.anchor); put
    /// it on another volume than the database.
    #[arg(long)]
    pub audit_anchor: Option<PathBuf>,
    /// The shred ledger: every key destruction, so a restore keeps erased
    /// data erased (default DATA_DIR/shred.ledger; put it on another volume).
    #[arg(long)]
    pub shred_ledger: Option<PathBuf>,
    /// Keep the vault in PostgreSQL (postgres://USER:PASSWORD@HOST/DB),
    /// shared by every server given the same URL, instead of SQLite in
    /// the data directory.
    #[arg(long, env = "STRONGBOX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The CA certificate (PEM) that signed the PostgreSQL server's
    /// certificate: connect with TLS and verify the server against it
    /// (needed when the URL says sslmode=require).
    #[arg(long)]
    pub database_ca: Option<PathBuf>,
    /// Serve Prometheus metrics on `GET /metrics` at this address (plain
    /// HTTP; keep it on a private interface). Off by default.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Keep the root key in a PKCS#11 token (HSM) instead of the key file.
    #[command(flatten)]
    pub pkcs11: Pkcs11Args,
}

/// Runs a client subcommand; `serve` is handled by `main`.
pub async fn run_client(cli: Cli) -> anyhow::Result<()> {
    commands::run(cli).await
}

/// Formats a failed call for stderr: `CODE: message`.
pub fn describe_error(e: &anyhow::Error) -> String {
    output::describe_error(e)
}
