//! `audit verify` on a large chain: builds a real chain of N entries (default
//! 1,000,000; `AUDIT_ENTRIES` overrides) in a temp SQLite database with the
//! library's own `append`, then times `audit::verify` over it.
//! Run: `cargo bench --bench audit_verify`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use strongbox::audit::{self, Call, Outcome};
use strongbox::crypto::SecretKey;

fn main() {
    let n: u64 = std::env::var("AUDIT_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(strongbox::store::Store::open(&path, 1).unwrap());
    let conn = strongbox::store::Direct::open(&path).unwrap();
    let key = SecretKey::generate();
    let started = Instant::now();
    conn.begin().unwrap();
    for i in 1..=n {
        let call = Call::new(
            format!("{i:016x}"),
            "record.get",
            String::new(),
            "127.0.0.1:50000".into(),
        );
        call.set_principal("prn-0123456789abcdef0123456789abcdef");
        call.set_tenant("acme");
        call.set_resource(format!("record:{:064x}/contact/email", i % 1000));
        audit::append(conn.tx(), &key, call.entry(Outcome::Ok, 0)).unwrap();
        if i % 100_000 == 0 {
            conn.commit().unwrap();
            conn.begin().unwrap();
        }
    }
    conn.commit().unwrap();
    let built = started.elapsed();
    let started = Instant::now();
    let report = audit::verify(conn.tx(), &key).unwrap();
    let verified = started.elapsed();
    assert_eq!(report.problem, None);
    assert_eq!(report.entries, n);
    println!(
        "audit verify: {n} entries in {:.2} s ({:.0} entries/s); building the chain took {:.2} s",
        verified.as_secs_f64(),
        n as f64 / verified.as_secs_f64(),
        built.as_secs_f64()
    );
}
