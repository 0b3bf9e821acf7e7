//! Golden vectors for every stored format: fixed inputs, fixed expected
//! bytes, checked in. A vault must still open what an older version wrote,
//! so any change to a layout (the seal's version byte, salt and nonce, the
//! HKDF labels, an AAD's fields, the audit entry's MAC input, a checkpoint
//! or head row, the anchor file's lines) fails here. The PKCS#11 root key's
//! wraps have no vector: that key is generated inside the token and never
//! leaves it, so no fixed key can stand for it (tests/hsm.rs covers them). A deliberate format change adds a new version
//! and new vectors; it never edits these.
#![allow(clippy::unwrap_used)]

use strongbox::audit::{self, Call, Outcome};
use strongbox::crypto::{self, SecretKey, label};
use strongbox::keyring::aad;

fn key() -> SecretKey {
    SecretKey::from_slice(&[7u8; 32]).unwrap()
}

const OWNER: [u8; 32] = [1u8; 32];

#[test]
fn a_record_sealed_by_this_layout_still_opens() {
    // Written by `crypto::seal`: version byte 1, 128-bit salt, 96-bit nonce,
    // AES-256-GCM under HKDF-SHA256(salt, key, label), tag.
    let sealed = hex::decode(SEAL).unwrap();
    let ra = aad::record("acme", &OWNER, "contact", "email", 3, "text/plain", "dek-1");
    let plain = crypto::open(&key(), label::RECORD, &ra, &sealed).unwrap();
    assert_eq!(&plain[..], b"alice@example.com");
    // fail_: the same bytes under another version of the record.
    let other = aad::record("acme", &OWNER, "contact", "email", 4, "text/plain", "dek-1");
    assert!(crypto::open(&key(), label::RECORD, &other, &sealed).is_err());
}

#[test]
fn a_data_key_wrapped_by_this_layout_still_unwraps() {
    let wrapped = hex::decode(WRAP).unwrap();
    let da = aad::dek("acme", &OWNER, "dek-1", 2);
    let dek = crypto::unwrap_key(&key(), label::WRAP_DEK, &da, &wrapped).unwrap();
    assert_eq!(dek.expose_secret(), &[9u8; 32]);
    // fail_: under another KEK version's AAD.
    let moved = aad::dek("acme", &OWNER, "dek-1", 3);
    assert!(crypto::unwrap_key(&key(), label::WRAP_DEK, &moved, &wrapped).is_err());
}

#[test]
fn every_aad_layout_is_as_stored() {
    let cases: [(&str, Vec<u8>, &str); 9] = [
        (
            "record",
            aad::record("acme", &OWNER, "contact", "email", 3, "text/plain", "dek-1"),
            concat!(
                "000000067265636f72640000000461636d650000002001010101010101010101",
                "0101010101010101010101010101010101010101010100000007636f6e746163",
                "7400000005656d61696c0000000800000000000000030000000a746578742f70",
                "6c61696e0000000564656b2d31",
            ),
        ),
        (
            "dek",
            aad::dek("acme", &OWNER, "dek-1", 2),
            concat!(
                "0000000364656b0000000461636d650000002001010101010101010101010101",
                "010101010101010101010101010101010101010000000564656b2d3100000004",
                "00000002",
            ),
        ),
        (
            "kek",
            aad::kek("acme", 2),
            "000000036b656b0000000461636d650000000400000002",
        ),
        (
            "index",
            aad::index_key("acme"),
            "00000009696e6465782d6b65790000000461636d65",
        ),
        (
            "subject",
            aad::subject_id("acme", &OWNER, "dek-1"),
            concat!(
                "0000000a7375626a6563742d69640000000461636d6500000020010101010101",
                "0101010101010101010101010101010101010101010101010101000000056465",
                "6b2d31",
            ),
        ),
        ("audit", aad::audit_key(), "0000000961756469742d6b6579"),
        (
            "receipt",
            aad::receipt_key(),
            "0000000b726563656970742d6b6579",
        ),
        ("state", aad::state_key(), "0000000973746174652d6b6579"),
        ("root", aad::root_check(), "0000000a726f6f742d636865636b"),
    ];
    for (name, got, want) in cases {
        assert_eq!(hex::encode(got), want, "the {name} AAD layout changed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_chain_macs_are_as_stored() {
    // 1,000 fixed entries under a fixed key: entry 1's MAC (the canonical
    // entry encoding after the genesis link), the checkpoint at 1,000 and
    // the head row (seq, head MAC, the row's MAC).
    let dir = tempfile::tempdir().unwrap();
    let store = strongbox::store::Store::open(&dir.path().join("db"), 1).unwrap();
    store
        .write(|tx| {
            let k = key();
            for i in 1..=1000u64 {
                let call = Call::new(
                    format!("req{i}"),
                    "record.get",
                    "purpose".into(),
                    "127.0.0.1:1".into(),
                );
                call.set_principal("prn-1");
                call.set_tenant("acme");
                call.set_resource(format!("record:x/c/k{i}"));
                let mut e = call.entry(Outcome::Ok, 0);
                e.time = 1_700_000_000_000 + i as i64;
                audit::append(tx, &k, e)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let c = rusqlite::Connection::open(dir.path().join("db")).unwrap();
    let one = |sql: &str| -> String {
        hex::encode(c.query_row(sql, [], |r| r.get::<_, Vec<u8>>(0)).unwrap())
    };
    assert_eq!(one("SELECT mac FROM audit_log WHERE seq = 1"), ENTRY1);
    assert_eq!(
        one("SELECT mac FROM audit_checkpoints WHERE seq = 1000"),
        CHECKPOINT
    );
    assert_eq!(
        one("SELECT value FROM meta WHERE name = 'audit_head'"),
        HEAD
    );
}

const SEAL: &str = concat!(
    "015e959015b0877bbb6e419b7cbc3886607d8deb73a4262de60d5f97e00af0cc",
    "2afbfeeca1954d9128115766c1e0d178cc7c279e8c86a4d7bf4c78fa9401",
);
const WRAP: &str = concat!(
    "01e6842ee714a9b6e5b2be89e93c84ac843bad4cd3a015cd2446c3f453525472",
    "7f72fadaef78811d0e420c03cc458c8bafd95a0ab51a8be30b5a5cedd16933bb",
    "cdb31943e413ca01cfaada8fa6",
);
const ENTRY1: &str = "c593395ddc215e456ac20598a2b2308e4a25243a6fcbbb28f12210def68dfb3c";
const CHECKPOINT: &str = "96850caede1a4881c17a7f633655cd0cf3c4cad8ee2a340f4998d56587a56ec4";
const HEAD: &str = concat!(
    "00000000000003e8e089958319072800103c39d5c11511ae0c1323d517b87ed2",
    "9de92b0912a097528e6324b79bc000b469635683fbc918a0dc602d8fa1243107",
    "0a951b82aaa45312",
);

#[test]
fn the_security_state_macs_are_as_stored() {
    use strongbox::integrity;
    use strongbox::store::{ApiKeyRow, PrincipalRow, TenantRow, TenantState};
    let k = key();
    let tenant = TenantRow {
        id: "acme".into(),
        name: "Acme".into(),
        state: TenantState::ShredScheduled,
        created_at: 1_700_000_000_000,
        shred_at: Some(1_700_000_600_000),
        kek_version: 2,
        wrapped_index_key: None,
        dek_id: Some("dek-1".into()),
        min_decrypt_version: 1,
        rotate_after_ms: Some(86_400_000),
        rotate_after_wraps: None,
        admin_recovery_at: None,
        holds_digest: None,
        mac: None,
    };
    let principal = PrincipalRow {
        id: "prn-1".into(),
        tenant_id: Some("acme".into()),
        name: "app".into(),
        roles: "writer,reader".into(),
        created_at: 1_700_000_000_000,
        cert_cn: Some("billing".into()),
        mac: None,
    };
    let api_key = ApiKeyRow {
        key_id: "0123456789abcdef".into(),
        principal_id: "prn-1".into(),
        secret_hash: vec![3; 32],
        created_at: 1_700_000_000_000,
        expires_at: Some(1_800_000_000_000),
        revoked_at: None,
        last_used_at: Some(5),
        mac: None,
    };
    assert_eq!(
        [
            hex::encode(integrity::tenant_mac(&k, &tenant)),
            hex::encode(integrity::principal_mac(&k, &principal)),
            hex::encode(integrity::api_key_mac(&k, &api_key)),
        ],
        [
            "09a219bb4c9392be1af8924726391b8a11b88fd05888a0725702088bd91335db",
            "76fe456906410c56cbf127a82813ac9eaa211e3ee1dfa0348357f77640f67dd0",
            "569c293ef8e4aada335da2ab442018a10fa5b20604f1ce34d970c4b27ac7cd7c",
        ]
    );
    // Fields added later (a pending admin recovery, the holds digest) are
    // appended after their names only when set; without them the layout,
    // and so every tenant MAC sealed before, is unchanged.
    let recovering = TenantRow {
        admin_recovery_at: Some(1_700_086_400_000),
        ..tenant.clone()
    };
    assert_eq!(
        hex::encode(integrity::tenant_mac(&k, &recovering)),
        "8adc6af73b543a57c489c3f18c4c94e5862f470bda15dc6c3e93a2c06b488269"
    );
    let held = TenantRow {
        holds_digest: Some(vec![4; 32]),
        ..tenant
    };
    assert_eq!(
        hex::encode(integrity::tenant_mac(&k, &held)),
        "4f674c252ec3880b53be02d8c04e6880216cb1f2e89790129ef0fcea1e36b97b"
    );
}

/// An anchor file as written: two heads and an operator's reset.
const ANCHOR: &str = "v1 head 5 1795430628910 0505050505050505050505050505050505050505050505050505050505050505 ce297239661c5e1855bb2bd2b6d7ca8fd9b3d600bd70876709b75df8b236a072
v1 head 9 1795430628910 0909090909090909090909090909090909090909090909090909090909090909 f218df3fece0e2f123bbd1258f4554f1d1615385d54e94195956fe0f86ca4bd6
v1 reset 7 1795430628910 0707070707070707070707070707070707070707070707070707070707070707 f9bc3b8f3d1c919d249c103023e9ac2a6ddfb4707e41b2999d0d2628d5c1f76d
";

#[test]
fn an_anchor_file_written_in_this_layout_still_opens() {
    use strongbox::audit::anchor::{Anchor, Point};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.anchor");
    std::fs::write(&path, ANCHOR).unwrap();
    let a = Anchor::open(&path, &key()).unwrap();
    assert_eq!(
        a.newest(0),
        Some(Point {
            seq: 7,
            head: vec![7; 32]
        })
    );
    assert_eq!(a.floor(0), 7);
    // fail_: a line's sequence number edited, or the lines' order changed.
    for forged in [
        ANCHOR.replacen("head 9 ", "head 8 ", 1),
        ANCHOR
            .lines()
            .rev()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    ] {
        std::fs::write(&path, forged).unwrap();
        assert!(Anchor::open(&path, &key()).is_err());
    }
}
