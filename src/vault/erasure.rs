//! The erasure epoch roll (see `crate::erasure` for why): at every
//! `erasure_epoch` a new epoch key, every live tenant key rewrapped under
//! it, and the keys of epochs that ended `erasure_window` ago destroyed,
//! each destruction in the shred ledger first.
//!
//! Crash-safe at every step. The new key is in its file before anything is
//! wrapped under it; the rewrap commits in batches, each row naming the
//! epoch it is under, so a cut-short roll resumes at the next one; an
//! epoch key is destroyed only when no live tenant key is under it, after
//! its ledger line (a crash between the two destroys it at the next roll,
//! and writes the line again).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Vault;
use crate::audit::Call;
use crate::erasure::EpochKeys;
use crate::error::{Error, Result};
use crate::ledger::Destroyed;
use crate::now_ms;

/// Tenant keys rewrapped per transaction, and the pause between them.
const ROLL_BATCH: usize = 256;
const ROLL_PAUSE: Duration = Duration::from_millis(5);

/// Where the epoch keys are and how long epochs and the window last.
#[derive(Clone, Debug)]
pub struct ErasureSettings {
    pub keys_file: PathBuf,
    pub epoch: Duration,
    pub window: Duration,
}

/// The cross-server exclusion of units that read and write the shared
/// erasure keys file.
const EPOCH_FILE_LOCK: &str = "erasure-keys-file";

/// What a roll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochRoll {
    /// The epoch begun, if one was.
    pub began: Option<u64>,
    /// Tenant keys rewrapped under the current epoch.
    pub rewrapped: usize,
    /// Epochs whose keys were destroyed.
    pub destroyed: Vec<u64>,
}

impl Vault {
    /// Loads the erasure epoch keys from `settings.keys_file` and wraps
    /// tenant keys under them from now on. Refused if a live tenant key is
    /// under an epoch the file lacks (for a database restored from a
    /// backup taken at `backup_time`, the message says the backup is older
    /// than the window, when it is).
    pub async fn open_erasure(
        &self,
        settings: ErasureSettings,
        backup_time: Option<i64>,
    ) -> Result<()> {
        let keys = self.keys.clone();
        let wrap = self.store.read(move |c| keys.erasure_wrap_key(c)).await?;
        let path = settings.keys_file.clone();
        let loaded = crate::blocking(move || EpochKeys::load(&path, &wrap)).await?;
        let held: Vec<u64> = loaded.epochs().iter().map(|(n, _)| *n).collect();
        let missing: Vec<u64> = self
            .store
            .read(|tx| tx.epochs_in_use())
            .await?
            .into_iter()
            .filter(|n| !held.contains(n))
            .collect();
        if !missing.is_empty() {
            return Err(missing_epochs(&settings, &held, &missing, backup_time));
        }
        self.keys.set_epochs(loaded);
        let _ = self.erasure.set(settings);
        Ok(())
    }

    /// Begins a new epoch when the current one is `erasure_epoch` old (or
    /// there is none), moves every live tenant key under the current
    /// epoch, and destroys the keys of epochs that ended `erasure_window`
    /// ago. Does nothing without [`Vault::open_erasure`].
    pub async fn roll_erasure_epoch(&self) -> Result<EpochRoll> {
        let Some(settings) = self.erasure.get().cloned() else {
            return Ok(EpochRoll::default());
        };
        // Root rotation rewraps tenant keys too: one at a time.
        let _one_at_a_time = self.root_rotation.lock().await;
        let now = now_ms();
        let epoch_ms = settings.epoch.as_millis() as i64;
        let window_ms = settings.window.as_millis() as i64;
        let mut roll = EpochRoll::default();
        // Deciding and making a new epoch key happen in a write unit made
        // exclusive across servers: one server at a time reads the shared
        // file, decides and writes it (a write a retried transaction could
        // not take back).
        let keys = self.keys.clone();
        let (target, began) = self
            .store
            .write(move |c| {
                c.exclusive(EPOCH_FILE_LOCK)?;
                keys.reload_epochs(c)?;
                match keys.epochs().last() {
                    Some(&(n, created)) if now_ms() - created < epoch_ms => Ok((n, false)),
                    _ => {
                        let wrap = keys.erasure_wrap_key(c)?;
                        keys.with_epochs(|e| e.add(&wrap, now_ms()))
                            .map(|n| (n, true))
                    }
                }
            })
            .await?;
        if began {
            roll.began = Some(target);
            crate::crash_point("epoch-key-made");
        }
        loop {
            let keys = self.keys.clone();
            let n = self
                .store
                .write(move |c| keys.rewrap_into_epoch(c, target, ROLL_BATCH))
                .await?;
            roll.rewrapped += n;
            if n > 0 {
                crate::crash_point("epoch-rewrapped");
            }
            if n < ROLL_BATCH || !self.keep_working().await? {
                break;
            }
            tokio::time::sleep(ROLL_PAUSE).await;
        }
        let epochs = self.keys.epochs();
        let ended_long_ago: Vec<u64> = epochs
            .windows(2)
            .filter(|w| w[1].1 + window_ms <= now)
            .map(|w| w[0].0)
            .filter(|n| *n != target)
            .collect();
        if !ended_long_ago.is_empty() {
            let in_use = self.store.read(|tx| tx.epochs_in_use()).await?;
            roll.destroyed = ended_long_ago
                .into_iter()
                .filter(|n| !in_use.contains(n))
                .collect();
        }
        if !roll.destroyed.is_empty() {
            self.ledger_record(
                roll.destroyed
                    .iter()
                    .map(|&epoch| Destroyed::Epoch { epoch })
                    .collect(),
            )
            .await?;
            crate::crash_point("epoch-ledgered");
            let (keys, doomed) = (self.keys.clone(), roll.destroyed.clone());
            self.store
                .write(move |c| {
                    c.exclusive(EPOCH_FILE_LOCK)?;
                    keys.reload_epochs(c)?;
                    keys.with_epochs(|e| e.destroy(&doomed))
                })
                .await?;
        }
        if roll.began.is_some() || !roll.destroyed.is_empty() {
            let call = Arc::new(Call::system("key.erasure-epoch"));
            call.set_resource(format!(
                "epoch:{target} rewrapped:{} destroyed:{:?}",
                roll.rewrapped, roll.destroyed
            ));
            self.mutate(&call, |_| Ok(())).await?;
            tracing::info!(
                epoch = target,
                began = roll.began.is_some(),
                rewrapped = roll.rewrapped,
                destroyed = ?roll.destroyed,
                "erasure epoch rolled"
            );
        }
        Ok(roll)
    }
}

impl Vault {
    /// What an erasure promises, in words, with this vault's window.
    pub fn erasure_promise(&self) -> String {
        match self.erasure.get() {
            Some(s) => format!(
                "unreadable in this vault at once; unreadable in every copy of the database after at most {} (erasure_window)",
                crate::config::fmt_duration(s.window)
            ),
            None => "unreadable in this vault at once; copies of the database made before stay readable with the root key (no erasure epochs)".into(),
        }
    }
}

/// The error for a database whose tenant keys are under epochs the keys
/// file lacks: a backup older than the window, or the wrong (or no) file.
fn missing_epochs(
    settings: &ErasureSettings,
    held: &[u64],
    missing: &[u64],
    backup_time: Option<i64>,
) -> Error {
    let file = settings.keys_file.display();
    let oldest_held = held.first().copied();
    match (oldest_held, backup_time) {
        (None, _) => Error::FailedPrecondition(format!(
            "erasure_keys: {file} holds no epoch keys, and this vault's tenant keys are wrapped under epochs {missing:?}: put the vault's erasure keys file there (it lives beside the root key; `erasure_keys` in the config)"
        )),
        (Some(oldest), Some(time)) if missing.iter().all(|m| *m < oldest) => {
            Error::FailedPrecondition(format!(
                "backup: it was taken at {}, longer ago than erasure_window ({}): the erasure epoch keys its tenant keys are wrapped under (epochs {missing:?}) have been destroyed, so no one can open it any more, with or without the root key; this is what keeps people erased since then erased. Restore a newer backup",
                super::fmt_time(time),
                crate::config::fmt_duration(settings.window),
            ))
        }
        _ => Error::FailedPrecondition(format!(
            "erasure_keys: {file} lacks the epoch keys {missing:?} that tenant keys are wrapped under (it holds {held:?}): it is another vault's file, or an older copy of this one's"
        )),
    }
}
