//! A subject's export carries its access history (GDPR Art. 15: who
//! received the person's data): every audited call that touched the
//! subject, with time, principal name, action, outcome and the stated
//! purpose; and each record's version and last update.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use strongbox::client::Client;

async fn read_with_purpose(c: &Client, subject: &str, key: &str, purpose: &str) {
    let mut req = tonic::Request::new(get("t", subject, "contact", key));
    req.metadata_mut()
        .insert("x-strongbox-purpose", purpose.parse().unwrap());
    c.records().get_record(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn export_lists_who_touched_the_subject_and_why() {
    let s = TestServer::start().await;
    let admin = s.tenant("t").await;
    let billing = s
        .client(&new_principal(&admin, "t", "billing-service", &["writer", "reader"]).await)
        .await;
    let crm = s
        .client(&new_principal(&admin, "t", "crm", &["reader"]).await)
        .await;
    let dpo = s
        .client(&new_principal(&admin, "t", "dpo", &["privacy-officer"]).await)
        .await;
    put_ok(&billing, "t", "alice", "contact", "email", b"a@example.com").await;
    put_ok(
        &billing,
        "t",
        "alice",
        "contact",
        "email",
        b"alice@example.com",
    )
    .await;
    put_ok(&billing, "t", "bob", "contact", "email", b"bob@example.com").await;
    read_with_purpose(&billing, "alice", "email", "support ticket 4711").await;
    read_with_purpose(&crm, "alice", "email", "newsletter").await;
    read_with_purpose(&crm, "bob", "email", "bob's own business").await;

    let (_, records, history) = export_all(&dpo, "t", "alice").await;
    // Correction is a versioned put: the export shows which version.
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].version, 2);
    assert!(records[0].updated_at_unix_ms >= records[0].created_at_unix_ms);

    let seen: Vec<(&str, &str, &str, &str)> = history
        .iter()
        .map(|a| {
            (
                a.principal_name.as_str(),
                a.action.as_str(),
                a.outcome.as_str(),
                a.purpose.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("billing-service", "record.put", "ok", ""),
            ("billing-service", "record.put", "ok", ""),
            ("billing-service", "record.get", "ok", "support ticket 4711"),
            ("crm", "record.get", "ok", "newsletter"),
        ],
        "alice's history, and nothing about bob"
    );
    assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(
        history
            .iter()
            .all(|a| a.time_unix_ms > 0 && a.principal_id.starts_with("prn-"))
    );

    // The history runs up to the export; the next export shows this one.
    let (_, _, again) = export_all(&dpo, "t", "alice").await;
    assert_eq!(again.len(), history.len() + 1);
    let last = again.last().unwrap();
    assert_eq!(
        (last.principal_name.as_str(), last.action.as_str()),
        ("dpo", "subject.export")
    );
}
