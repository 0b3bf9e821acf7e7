//! Identifiers parsed once at the edge: a value of these types is valid by
//! construction, so nothing past `api` re-checks them.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

fn is_slug_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

fn parse_slug(field: &'static str, s: &str, max: usize) -> Result<String> {
    if s.is_empty() || s.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be 1-{max} characters, got {}", s.len()),
        ));
    }
    if !s.chars().all(is_slug_char) {
        return Err(Error::invalid(
            field,
            "may contain only lowercase letters, digits, '-' and '_'",
        ));
    }
    Ok(s.to_owned())
}

fn no_control_chars(field: &'static str, s: &str) -> Result<()> {
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A tenant id: 1-64 characters of `[a-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self> {
        parse_slug("tenant", s, Self::MAX_LEN).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

/// A subject id: any UTF-8 of 1-256 bytes. Personal data: it has no
/// `Display`, its `Debug` is redacted, and it zeroizes on drop. The vault
/// stores only its blind id and a sealed copy.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SubjectId(String);

impl SubjectId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                "subject",
                format!(
                    "must be 1-{} bytes of UTF-8, got {}",
                    Self::MAX_LEN,
                    s.len()
                ),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The plaintext id, for hashing, sealing and echoing back to the caller.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectId(<redacted>)")
    }
}

/// A data category (`contact`, `billing`, ...): 1-64 characters of `[a-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Category(String);

impl Category {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self> {
        parse_slug("category", s, Self::MAX_LEN).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A record key: 1-512 bytes of UTF-8 without control characters. Stored in
/// the clear as metadata: it names a field, it must not hold personal data.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct RecordKey(String);

impl RecordKey {
    pub const MAX_LEN: usize = 512;

    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                "key",
                format!("must be 1-{} bytes, got {}", Self::MAX_LEN, s.len()),
            ));
        }
        no_control_chars("key", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A MIME content type of at most 128 bytes; empty means octet-stream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ContentType(String);

impl ContentType {
    pub const MAX_LEN: usize = 128;
    pub const DEFAULT: &'static str = "application/octet-stream";

    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(Self(Self::DEFAULT.to_owned()));
        }
        if s.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                "content_type",
                format!("must be at most {} bytes, got {}", Self::MAX_LEN, s.len()),
            ));
        }
        no_control_chars("content_type", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A principal's display name: 1-128 bytes without control characters.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PrincipalName(String);

impl PrincipalName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                "name",
                format!("must be 1-{} bytes, got {}", Self::MAX_LEN, s.len()),
            ));
        }
        no_control_chars("name", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The longest duration any field takes: ten years. Longer ones (up to
/// 2^64-1 s) would overflow the millisecond times they are stored as.
pub const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A duration field in seconds, `min` to [`MAX_SECONDS`].
pub fn seconds(field: &'static str, value: u64, min: u64) -> Result<std::time::Duration> {
    if value < min || value > MAX_SECONDS {
        return Err(Error::invalid(
            field,
            format!("must be {min} to {MAX_SECONDS} seconds (10 years), got {value}"),
        ));
    }
    Ok(std::time::Duration::from_secs(value))
}

/// A duration as people write it back: `40d`, `1d 2h`, `90s` (whole
/// seconds; days, hours, minutes and seconds, never months).
pub fn fmt_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let parts = [
        (s / 86_400, "d"),
        (s % 86_400 / 3600, "h"),
        (s % 3600 / 60, "m"),
        (s % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_owned()
    } else {
        text.join(" ")
    }
}

/// A sequence or version number: stored as a signed 64-bit integer, so at
/// most 2^63-1.
pub fn stored_u64(field: &'static str, value: u64) -> Result<u64> {
    if i64::try_from(value).is_err() {
        return Err(Error::invalid(
            field,
            format!("must be at most 2^63-1, got {value}"),
        ));
    }
    Ok(value)
}

/// A page size: 0 means the default (100); above 1000 is refused.
pub fn page_size(requested: u32) -> Result<usize> {
    const DEFAULT: u32 = 100;
    const MAX: u32 = 1000;
    match requested {
        0 => Ok(DEFAULT as usize),
        n if n <= MAX => Ok(n as usize),
        n => Err(Error::invalid(
            "page_size",
            format!("must be at most {MAX}, got {n}"),
        )),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn durations_read_back_as_written() {
        let d = std::time::Duration::from_secs;
        assert_eq!(fmt_duration(d(40 * 86_400)), "40d");
        assert_eq!(fmt_duration(d(86_400 + 7200 + 5)), "1d 2h 5s");
        assert_eq!(fmt_duration(d(0)), "0s");
    }
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(TenantId::parse("acme-corp_1").is_ok());
        for fail in ["", "Acme", "a b", "a/b", &"x".repeat(65), "é"] {
            assert!(TenantId::parse(fail).is_err(), "{fail:?} must be refused");
        }
    }

    #[test]
    fn subject_ids_are_bytes_not_chars() {
        assert!(SubjectId::parse("alice@example.com").is_ok());
        assert!(SubjectId::parse(&"é".repeat(128)).is_ok()); // 256 bytes
        assert!(SubjectId::parse(&"é".repeat(129)).is_err());
        assert!(SubjectId::parse("").is_err());
    }

    #[test]
    fn subject_debug_is_redacted() {
        let s = SubjectId::parse("alice@example.com").unwrap();
        assert!(!format!("{s:?}").contains("alice"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = RecordKey::parse("a\nb").unwrap_err();
        assert!(e.to_string().starts_with("key:"), "{e}");
        let e = page_size(5000).unwrap_err();
        assert!(e.to_string().starts_with("page_size:"), "{e}");
    }
}
