//! The PostgreSQL URL a server keeps its vault in (`database_url`).

use crate::error::{Error, Result};

/// A PostgreSQL connection URL. It may hold a password, so `Debug` shows
/// only the host and database.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Accepts `postgres://` and `postgresql://` URLs.
    pub fn parse(url: String) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::invalid(
                "database_url",
                "must be a postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)",
            ));
        }
        Ok(DatabaseUrl(url))
    }

    /// The URL itself, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Host, port and database, without user or password (for logs).
    pub fn describe(&self) -> String {
        let rest = self.0.split_once("://").map_or("", |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        rest.split('?').next().unwrap_or("").to_owned()
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "postgres://…@{}", self.describe())
    }
}
