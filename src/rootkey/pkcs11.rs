//! The PKCS#11 root-key provider: the root key is an AES-256 key generated
//! inside an HSM token, marked sensitive and non-extractable, and every wrap
//! and unwrap of a key held under it is a CKM_AES_GCM operation inside the
//! token. Strongbox never sees the root key's bytes.
//!
//! Key objects in the token, found by label:
//!
//! - `<label>`: the root key in use.
//! - `<label>.next`: a successor staged by a root rotation (or by the move
//!   from a key file); relabelled `<label>` once the rewrap committed.
//! - `<label>.old`: the root key a rotation replaced, kept a few seconds
//!   for readers whose snapshot predates the rotation, then destroyed.
//!
//! Wrapped form: `0x01 || iv (12 bytes, random) || ciphertext || tag (16)`,
//! with AAD = `len(label) (u32 BE) || label || aad`. The key count under the
//! root key is small (tenant KEKs, index keys, three vault keys), far from
//! the 2^32 random-IV bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::{RootKeyProvider, UnwrapError};
use crate::crypto::{self, KEY_LEN, SecretKey};
use crate::error::{Error, Result};

/// The environment variable the token's user PIN is read from by default.
pub const DEFAULT_PIN_ENV: &str = "STRONGBOX_PKCS11_PIN";
/// The root key's object label by default.
pub const DEFAULT_KEY_LABEL: &str = "strongbox-root";

const FORMAT: u8 = 1;
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// Where the root key lives: the PKCS#11 module, the token, the key's
/// label, and the environment variable holding the user PIN (the PIN is
/// never a flag or a config value, so it stays out of `ps` and files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    pub module: PathBuf,
    pub token: String,
    pub key_label: String,
    pub pin_env: String,
}

impl Pkcs11Config {
    /// The RFC 7512-style name of the root key object, for logs and errors.
    pub fn uri(&self) -> String {
        format!("pkcs11:token={};object={}", self.token, self.key_label)
    }
}

/// One logged-in session on the token, shared by every provider object of
/// this token (the current root key and a staged successor).
pub struct Hsm {
    session: Mutex<Session>,
    token: String,
}

/// Each module is loaded and initialized once per process: a second
/// `C_Initialize` fails, and finalizing one context would end every session.
fn module(path: &Path) -> Result<Pkcs11> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let fail =
        |e: P11Error| Error::FailedPrecondition(format!("pkcs11_module {}: {e}", path.display()));
    let m = Pkcs11::new(path).map_err(fail)?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(fail(e)),
    }
    modules.insert(path.to_owned(), m.clone());
    Ok(m)
}

fn hsm_error(what: &str, e: P11Error) -> Error {
    Error::Unavailable(format!("HSM: {what}: {e}"))
}

impl Hsm {
    /// Opens a read-write session on the token labelled `cfg.token` and
    /// logs in as its user with the PIN from `$cfg.pin_env`.
    pub fn connect(cfg: &Pkcs11Config) -> Result<Arc<Hsm>> {
        let ctx = module(&cfg.module)?;
        let mut found = None;
        for slot in ctx
            .get_slots_with_token()
            .map_err(|e| hsm_error("listing slots", e))?
        {
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| hsm_error("reading token info", e))?;
            if info.label().trim_end() == cfg.token {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "pkcs11_token: no token labelled '{}' in {}",
                cfg.token,
                cfg.module.display()
            ))
        })?;
        let pin = Zeroizing::new(std::env::var(&cfg.pin_env).map_err(|_| {
            Error::FailedPrecondition(format!(
                "pkcs11 PIN: set ${} to the user PIN of token '{}'",
                cfg.pin_env, cfg.token
            ))
        })?);
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| hsm_error("opening a session", e))?;
        match session.login(UserType::User, Some(&AuthPin::from(pin.as_str()))) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(P11Error::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(Error::FailedPrecondition(format!(
                    "pkcs11 PIN: the PIN in ${} is not the user PIN of token '{}'",
                    cfg.pin_env, cfg.token
                )));
            }
            Err(e) => return Err(hsm_error("logging in", e)),
        }
        Ok(Arc::new(Hsm {
            session: Mutex::new(session),
            token: cfg.token.clone(),
        }))
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        // A poisoned lock means a panic elsewhere; the session itself holds
        // no half-done state between calls (each call is one C_Encrypt etc.).
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every AES secret key labelled `label`.
    fn find_all(&self, label: &str) -> Result<Vec<ObjectHandle>> {
        self.session()
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| hsm_error("finding keys", e))
    }

    /// The one AES key labelled `label`, if any.
    pub fn find(&self, label: &str) -> Result<Option<ObjectHandle>> {
        let found = self.find_all(label)?;
        if found.len() > 1 {
            return Err(Error::FailedPrecondition(format!(
                "HSM: token '{}' holds {} keys labelled '{label}'; exactly one is expected",
                self.token,
                found.len()
            )));
        }
        Ok(found.first().copied())
    }

    /// Generates a fresh AES-256 key inside the token: persistent, private,
    /// sensitive, never extractable, good only for encrypt and decrypt.
    fn generate(&self, label: &str) -> Result<ObjectHandle> {
        self.session()
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen((KEY_LEN as u64).into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                    Attribute::Derive(false),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
            )
            .map_err(|e| hsm_error("generating a key", e))
    }

    fn relabel(&self, key: ObjectHandle, label: &str) -> Result<()> {
        self.session()
            .update_attributes(key, &[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| hsm_error("relabelling a key", e))
    }

    fn destroy(&self, key: ObjectHandle) -> Result<()> {
        match self.session().destroy_object(key) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(()),
            Err(e) => Err(hsm_error("destroying a key", e)),
        }
    }

    fn destroy_all(&self, label: &str) -> Result<usize> {
        let found = self.find_all(label)?;
        for key in &found {
            self.destroy(*key)?;
        }
        Ok(found.len())
    }

    /// What the token says of `label`'s key: for the operator's check that
    /// the root key cannot leave the HSM.
    pub fn inspect(&self, label: &str) -> Result<Option<KeyReport>> {
        let Some(key) = self.find(label)? else {
            return Ok(None);
        };
        let session = self.session();
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Local,
                    AttributeType::ValueLen,
                ],
            )
            .map_err(|e| hsm_error("reading key attributes", e))?;
        let mut report = KeyReport::default();
        for a in attrs {
            match a {
                Attribute::Sensitive(b) => report.sensitive = b,
                Attribute::Extractable(b) => report.extractable = b,
                Attribute::AlwaysSensitive(b) => report.always_sensitive = b,
                Attribute::NeverExtractable(b) => report.never_extractable = b,
                Attribute::Local(b) => report.generated_in_token = b,
                Attribute::ValueLen(n) => report.bits = u64::from(n) * 8,
                _ => {}
            }
        }
        // Asking for the value must come back empty: a sensitive key's
        // value is not readable (the token answers "sensitive").
        report.value_readable = matches!(
            session.get_attributes(key, &[AttributeType::Value]),
            Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(bytes) if !bytes.is_empty()))
        );
        Ok(Some(report))
    }
}

/// The security-relevant attributes of the root key object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyReport {
    pub bits: u64,
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
    pub generated_in_token: bool,
    pub value_readable: bool,
}

/// A root key inside a PKCS#11 token.
pub struct HsmProvider {
    hsm: Arc<Hsm>,
    /// The canonical label (`<label>`), also for a staged successor.
    label: String,
    key: ObjectHandle,
}

/// The label a staged successor carries until it is promoted.
pub fn staged_label(label: &str) -> String {
    format!("{label}.next")
}

/// The label the replaced root key carries until it is destroyed.
pub fn retired_label(label: &str) -> String {
    format!("{label}.old")
}

impl HsmProvider {
    /// The root key labelled `label`, if the token holds one.
    pub fn find(hsm: &Arc<Hsm>, label: &str) -> Result<Option<Self>> {
        Ok(hsm.find(label)?.map(|key| HsmProvider {
            hsm: hsm.clone(),
            label: label.to_owned(),
            key,
        }))
    }

    /// Generates the root key of a new vault.
    pub fn create(hsm: &Arc<Hsm>, label: &str) -> Result<Self> {
        let key = hsm.generate(label)?;
        Ok(HsmProvider {
            hsm: hsm.clone(),
            label: label.to_owned(),
            key,
        })
    }

    /// A successor staged as `<label>.next` but not yet promoted.
    pub fn find_staged(hsm: &Arc<Hsm>, label: &str) -> Result<Option<Self>> {
        Ok(hsm.find(&staged_label(label))?.map(|key| HsmProvider {
            hsm: hsm.clone(),
            label: label.to_owned(),
            key,
        }))
    }

    /// Stages a fresh successor as `<label>.next`, replacing any earlier
    /// one that was never promoted (nothing committed is wrapped under it).
    pub fn stage(hsm: &Arc<Hsm>, label: &str) -> Result<Self> {
        let next = staged_label(label);
        hsm.destroy_all(&next)?;
        let key = hsm.generate(&next)?;
        Ok(HsmProvider {
            hsm: hsm.clone(),
            label: label.to_owned(),
            key,
        })
    }
}

impl RootKeyProvider for HsmProvider {
    fn describe(&self) -> String {
        format!("pkcs11:token={};object={}", self.hsm.token, self.label)
    }

    fn wrap(&self, label: &str, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>> {
        let mut iv: [u8; IV_LEN] = crypto::random_bytes();
        let full_aad = bound_aad(label, aad);
        let params = GcmParams::new(&mut iv, &full_aad, TAG_BITS.into())
            .map_err(|e| hsm_error("GCM parameters", e))?;
        let sealed = self
            .hsm
            .session()
            .encrypt(&Mechanism::AesGcm(params), self.key, key.expose_secret())
            .map_err(|e| hsm_error("wrapping a key", e))?;
        let mut out = Vec::with_capacity(1 + IV_LEN + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, label: &str, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey, UnwrapError> {
        if wrapped.len() < 1 + IV_LEN + 16 || wrapped[0] != FORMAT {
            return Err(UnwrapError::NotAuthentic);
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&wrapped[1..1 + IV_LEN]);
        let full_aad = bound_aad(label, aad);
        let params = GcmParams::new(&mut iv, &full_aad, TAG_BITS.into())
            .map_err(|e| UnwrapError::Unavailable(e.to_string()))?;
        let session = self.hsm.session();
        let plain = Zeroizing::new(
            session
                .decrypt(&Mechanism::AesGcm(params), self.key, &wrapped[1 + IV_LEN..])
                .map_err(|e| match e {
                    // The tag did not verify: not this key's, or damaged.
                    P11Error::Pkcs11(
                        RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::DataInvalid
                        | RvError::DataLenRange,
                        _,
                    ) => UnwrapError::NotAuthentic,
                    // Some tokens (SoftHSM2 among them) report a tag
                    // mismatch as a general error: if the session still
                    // answers, the bytes were at fault, not the device.
                    P11Error::Pkcs11(RvError::GeneralError, _)
                        if session.get_session_info().is_ok() =>
                    {
                        UnwrapError::NotAuthentic
                    }
                    other => UnwrapError::Unavailable(format!("{}: {other}", self.describe())),
                })?,
        );
        drop(session);
        Ok(SecretKey::from_slice(&plain)?)
    }

    fn stage_successor(&self) -> Result<Arc<dyn RootKeyProvider>> {
        Ok(Arc::new(Self::stage(&self.hsm, &self.label)?))
    }

    /// Relabels the key in use `<label>.old` (destroyed by `retire`, or at
    /// the next start) and the staged successor `<label>`. Safe to repeat
    /// after a crash part-way: it works from labels, not from this object.
    fn promote_successor(&self) -> Result<()> {
        let Some(next) = self.hsm.find(&staged_label(&self.label))? else {
            return Err(Error::FailedPrecondition(format!(
                "HSM: no staged root key '{}' to promote",
                staged_label(&self.label)
            )));
        };
        if let Some(current) = self.hsm.find(&self.label)? {
            self.hsm.relabel(current, &retired_label(&self.label))?;
        }
        self.hsm.relabel(next, &self.label)
    }

    /// Destroys a staged successor that was never promoted, and any
    /// replaced root key left by a rotation that a restart interrupted.
    fn discard_successor(&self) -> Result<()> {
        self.hsm.destroy_all(&staged_label(&self.label))?;
        self.hsm.destroy_all(&retired_label(&self.label))?;
        Ok(())
    }

    fn retire(&self) -> Result<()> {
        self.hsm.destroy(self.key)
    }

    /// The key labelled `<label>` on the token now, and `<label>.next` if
    /// a rotation staged one (another server's rotation, seen before or
    /// after its relabelling).
    fn candidates(&self) -> Result<Vec<Arc<dyn RootKeyProvider>>> {
        let found = [
            Self::find(&self.hsm, &self.label)?,
            Self::find_staged(&self.hsm, &self.label)?,
        ];
        Ok(found
            .into_iter()
            .flatten()
            .map(|p| Arc::new(p) as Arc<dyn RootKeyProvider>)
            .collect())
    }
}

/// The AAD given to the token: the purpose label, length-prefixed, then the
/// caller's AAD, so no (label, aad) pair can pass for another.
fn bound_aad(label: &str, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + label.len() + aad.len());
    out.extend_from_slice(&(label.len() as u32).to_be_bytes());
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(aad);
    out
}
