//! The offline commands that are not a restore: `strongbox key move-root`
//! (the root key into an HSM) and `strongbox audit accept-loss`. On
//! SQLite each holds the data directory's lock, so no server runs on it
//! meanwhile; on PostgreSQL each also refuses while another server's
//! presence on the database is live.

use super::*;
use crate::config::DatabaseUrl;

/// What `strongbox key move-root` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOutcome {
    /// Every key held under the root key was rewrapped into the HSM.
    Moved {
        keys: usize,
        from: String,
        to: String,
    },
    /// A move cut short after its commit was finished (the HSM key promoted).
    Finished { to: String },
    /// The vault's root key already is this HSM key.
    AlreadyThere { to: String },
}

/// Moves a vault's root key from its key file (or environment variable)
/// into a PKCS#11 token, with no server running on the vault: generates a
/// new root key inside the token, rewraps every key held under the root
/// key in one transaction (audited), then promotes it. A kill at any point
/// leaves a vault that opens with the old key or, after the commit, the
/// new one; running the command again finishes or restarts the move.
pub async fn move_root_to_hsm(
    data_dir: &Path,
    database: Option<(DatabaseUrl, Option<PathBuf>)>,
    (root_key_file, root_key_env): (Option<PathBuf>, Option<String>),
    audit_anchor: PathBuf,
    target: &Pkcs11Config,
) -> Result<MoveOutcome> {
    // On PostgreSQL the data directory holds no database; it is locked
    // when it exists (another `key move-root` from this host waits out),
    // and the servers on other hosts are seen by their presence.
    let _lock = match (&database, data_dir.exists()) {
        (Some(_), false) => None,
        _ => Some(lock_data_dir(data_dir)?),
    };
    restore::refuse_if_restoring(data_dir)?;
    let store = open_existing(data_dir, database, "to move the root key of").await?;
    let to = target.uri();
    let p11 = target.clone();
    let hsm = blocking(move || Hsm::connect(&p11)).await?;
    let label = target.key_label.clone();
    let (h, l) = (hsm.clone(), label.clone());
    let (existing, staged) = blocking(move || {
        Ok((
            HsmProvider::find(&h, &l)?.map(|k| Arc::new(k) as Provider),
            HsmProvider::find_staged(&h, &l)?.map(|k| Arc::new(k) as Provider),
        ))
    })
    .await?;
    let had_existing = existing.is_some();
    if let Some(root) = recover_root(&store, existing, staged.clone()).await? {
        if store
            .read({
                let root = root.clone();
                move |conn| keyring::root_matches(conn, &*root)
            })
            .await?
        {
            return Ok(if had_existing {
                MoveOutcome::AlreadyThere { to }
            } else {
                MoveOutcome::Finished { to }
            });
        }
        if had_existing {
            return Err(Error::FailedPrecondition(format!(
                "pkcs11_key_label: the token already holds a key {to} that does not open this vault; choose another --pkcs11-key-label"
            )));
        }
    }
    // The source: the environment variable, or the key file with any root
    // rotation it was in the middle of finished first.
    let source = match root_key_env {
        Some(var) => Arc::new(EnvProvider::from_env(&var)?) as Provider,
        None => {
            let path = root_key_file.unwrap_or_else(|| data_dir.join(crate::config::ROOT_KEY_FILE));
            let current: Provider = Arc::new(KeyFileProvider::open(&path)?);
            let staged = KeyFileProvider::open_staged(&path)?.map(|k| Arc::new(k) as Provider);
            recover_root(&store, Some(current), staged)
                .await?
                .ok_or_else(|| Error::Internal("no key file provider".into()))?
        }
    };
    let from = source.describe();
    let keys = Arc::new(Keyring::new(source));
    let anchor = AuditAnchor::Check(audit_anchor);
    let vault = Vault::open(store, keys, Default::default(), anchor).await?;
    let moved = async {
        vault.refuse_while_servers_live("key move-root").await?;
        let next = blocking(move || HsmProvider::stage(&hsm, &label)).await?;
        let call = Arc::new(crate::audit::Call::system("key.move-root"));
        call.set_principal("offline: strongbox key move-root");
        vault.move_root(&call, Arc::new(next)).await
    }
    .await;
    vault.release_job_lease().await?;
    Ok(MoveOutcome::Moved {
        keys: moved?,
        from,
        to,
    })
}

/// Acknowledges a broken audit chain, offline (`strongbox audit
/// accept-loss`, with the server stopped): keeps the verified stretch of
/// the chain, quarantines the rest, and records the acknowledgement, with
/// the operator's `reason`, as a new entry that the anchor file records as
/// a reset. The vault then opens again.
pub async fn accept_audit_loss(
    cfg: &ServerConfig,
    reason: String,
) -> Result<crate::audit::AcceptedLoss> {
    if reason.is_empty() || reason.len() > 256 || reason.chars().any(char::is_control) {
        return Err(Error::invalid(
            "reason",
            "must be 1-256 printable bytes: why the loss is accepted (an incident number)",
        ));
    }
    let _lock = lock_data_dir(&cfg.data_dir)?;
    restore::refuse_if_restoring(&cfg.data_dir)?;
    let database = cfg
        .database_url
        .clone()
        .map(|u| (u, cfg.database_ca.clone()));
    let store = open_existing(&cfg.data_dir, database, "to accept an audit loss on").await?;
    let root = open_root(cfg, &store).await?;
    let anchor = AuditAnchor::Accept(cfg.audit_anchor_path());
    let vault = Vault::open(
        store,
        Arc::new(Keyring::new(root)),
        cfg.limits.clone(),
        anchor,
    )
    .await?;
    let call = crate::audit::Call::new(
        hex::encode(crate::crypto::random_bytes::<8>()),
        "audit.accept-loss",
        reason,
        "internal".into(),
    );
    call.set_principal("offline: strongbox audit accept-loss");
    let done = async {
        vault.refuse_while_servers_live("audit accept-loss").await?;
        vault.accept_audit_loss(&Arc::new(call)).await
    }
    .await;
    vault.release_job_lease().await?;
    let done = done?;
    tracing::warn!(
        kept_through = done.kept_through,
        quarantined = done.quarantined,
        head = done.head_seq,
        "audit chain break accepted by an operator"
    );
    Ok(done)
}

/// The store of a vault that exists, for an offline command: the
/// PostgreSQL database of `database` (its URL and CA certificate), or
/// `data_dir`'s SQLite file. `what` says what the vault is needed for, in
/// the error.
pub(super) async fn open_existing(
    data_dir: &Path,
    database: Option<(DatabaseUrl, Option<PathBuf>)>,
    what: &str,
) -> Result<Store> {
    match database {
        Some((url, ca)) => {
            let store =
                blocking(move || Store::open_postgres(url.expose(), ca.as_deref(), 1)).await?;
            match store.holds_vault().await? {
                None => Err(Error::NotFound(format!(
                    "database_url: the database holds no vault {what}"
                ))),
                Some(true) => Err(Error::FailedPrecondition(
                    "database_url: the database is in the middle of a restore: run the same `strongbox restore` command again to finish it (docs/runbooks/backup-and-restore.md)".into(),
                )),
                Some(false) => Ok(store),
            }
        }
        None => {
            let db = data_dir.join(DB_FILE);
            if !db.exists() {
                return Err(Error::NotFound(format!(
                    "data_dir: no vault at {} (no {DB_FILE})",
                    data_dir.display()
                )));
            }
            blocking(move || Store::open(&db, 1)).await
        }
    }
}
