//! Append-only line files kept outside the database (the audit anchor,
//! the shred ledger): created 0600, a last line torn by a crash dropped on
//! open, and every append synced before it counts.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens (creating, 0600) the file at `path` and returns its whole lines.
/// A last line without its newline (a write cut short by a crash) is cut
/// off the file.
pub fn open_lines(path: &Path) -> std::io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)?;
    let mut text = std::fs::read(path)?;
    if let Some(end) = text.iter().rposition(|b| *b == b'\n') {
        if end + 1 != text.len() {
            file.set_len(end as u64 + 1)?;
            text.truncate(end + 1);
        }
    } else if !text.is_empty() {
        file.set_len(0)?;
        text.clear();
    }
    String::from_utf8(text)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "is not text"))
}

/// Appends `text` (whole lines) and syncs it to disk.
pub fn append_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file: File = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()
}
