//! Criterion benchmarks: the seal construction on 1 KiB and 1 MiB records,
//! and the vault's put and get (SQLite in a temp dir, no gRPC).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strongbox::audit::{Call, Outcome};
use strongbox::authz::{self, Action, Principal, Role};
use strongbox::crypto::{self, SecretKey, label};
use strongbox::ids::{Category, ContentType, RecordKey, SubjectId, TenantId};
use strongbox::keyring::Keyring;
use strongbox::rootkey::KeyFileProvider;
use strongbox::store::Store;
use strongbox::vault::{AuditAnchor, Limits, PutRecord, RecordRef, Vault};

fn seal_open(c: &mut Criterion) {
    let key = SecretKey::generate();
    let mut g = c.benchmark_group("seal");
    for size in [1024usize, 1 << 20] {
        let data = vec![0x42u8; size];
        let sealed = crypto::seal(&key, label::RECORD, b"aad", &data);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &data, |b, d| {
            b.iter(|| crypto::seal(&key, label::RECORD, b"aad", d))
        });
        g.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| crypto::open(&key, label::RECORD, b"aad", s).unwrap())
        });
        // The bare AES-256-GCM primitive: the machine's speed, for comparison.
        g.bench_with_input(BenchmarkId::new("bare-gcm-encrypt", size), &data, |b, d| {
            b.iter(|| crypto::gcm_encrypt(key.expose_secret(), &[7; 12], b"aad", d).unwrap())
        });
        let bare = crypto::gcm_encrypt(key.expose_secret(), &[7; 12], b"aad", &data).unwrap();
        g.bench_with_input(BenchmarkId::new("bare-gcm-decrypt", size), &bare, |b, c| {
            b.iter(|| crypto::gcm_decrypt(key.expose_secret(), &[7; 12], b"aad", c).unwrap())
        });
    }
    g.finish();
}

/// A call's audit record, as `api` opens one.
fn call(action: &'static str) -> Arc<Call> {
    let c = Call::new("bench".into(), action, String::new(), "127.0.0.1:1".into());
    c.set_principal("u");
    c.set_tenant("bench");
    Arc::new(c)
}

fn vault_put_get(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::parse("bench").unwrap();
    let vault: Arc<Vault> = rt.block_on(async {
        let root = KeyFileProvider::open_or_create(&dir.path().join("root.key")).unwrap();
        let store = Store::open(&dir.path().join("db"), 4).unwrap();
        Vault::open(
            store,
            Arc::new(Keyring::new(Arc::new(root))),
            Limits::default(),
            AuditAnchor::None,
        )
        .await
        .unwrap()
    });
    let operator = Principal {
        id: "op".into(),
        name: "op".into(),
        tenant: None,
        roles: vec![Role::Operator],
        cert_cn: None,
    };
    let user = Principal {
        id: "u".into(),
        name: "u".into(),
        tenant: Some(tenant.clone()),
        roles: vec![Role::Writer, Role::Reader],
        cert_cn: None,
    };
    let create = authz::authorize(&operator, Action::TenantCreate, None).unwrap();
    rt.block_on(vault.create_tenant(
        &create,
        &call("tenant.create"),
        tenant.clone(),
        String::new(),
    ))
    .unwrap();
    let put_permit = authz::authorize(&user, Action::RecordPut, Some(&tenant)).unwrap();
    let get_permit = authz::authorize(&user, Action::RecordGet, Some(&tenant)).unwrap();
    let value = vec![0x17u8; 1024];
    let put = |i: u64| PutRecord {
        subject: Some(SubjectId::parse(&format!("subject-{}", i % 100)).unwrap()),
        category: Category::parse("bench").unwrap(),
        key: RecordKey::parse(&format!("k{i}")).unwrap(),
        value: crypto::Plaintext::new(value.clone()),
        content_type: ContentType::parse("").unwrap(),
        expected_version: None,
        reinstate_erased_subject: false,
    };
    for i in 0..1000 {
        rt.block_on(vault.put_record(&put_permit, &call("record.put"), put(i)))
            .unwrap();
    }
    let mut g = c.benchmark_group("vault");
    g.throughput(Throughput::Elements(1));
    let mut n = 1000u64;
    g.bench_function("put 1KiB (one at a time, fsync each)", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(vault.put_record(&put_permit, &call("record.put"), put(n)))
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("put 1KiB x64 concurrent (group commit)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        n += 1;
                        let (v, p) = (vault.clone(), put(n));
                        let permit =
                            authz::authorize(&user, Action::RecordPut, Some(&tenant)).unwrap();
                        tokio::spawn(async move {
                            v.put_record(&permit, &call("record.put"), p).await.unwrap()
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("get 1KiB", |b| {
        b.iter(|| {
            i = (i + 1) % 1000;
            let r = RecordRef {
                subject: Some(SubjectId::parse(&format!("subject-{}", i % 100)).unwrap()),
                category: Category::parse("bench").unwrap(),
                key: RecordKey::parse(&format!("k{i}")).unwrap(),
            };
            // As the server does: the read, then its audit entry, durably.
            rt.block_on(async {
                let c = call("record.get");
                let v = vault.get_record(&get_permit, &c, r).await.unwrap();
                vault.record(&c, (Outcome::Ok, 0)).await.unwrap();
                v
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = seal_open, vault_put_get
}
criterion_main!(benches);
