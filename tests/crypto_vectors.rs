//! Known-answer tests: Wycheproof AES-GCM and HKDF-SHA256 vectors through
//! Strongbox's own wrappers (`crypto::gcm_encrypt`, `gcm_decrypt`,
//! `hkdf_sha256`), so a change of crate or a misuse of one shows here.
#![allow(clippy::unwrap_used)]

use strongbox::crypto;
use wycheproof::TestResult;

#[test]
fn wycheproof_aes_256_gcm() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let (mut ran, mut must_fail) = (0, 0);
    for group in &set.test_groups {
        // Strongbox uses AES-256 with 96-bit nonces and 128-bit tags only.
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for t in &group.tests {
            let key: &[u8; 32] = t.key.as_ref().try_into().unwrap();
            let nonce: &[u8; 12] = t.nonce.as_ref().try_into().unwrap();
            let mut ct_tag = t.ct.to_vec();
            ct_tag.extend_from_slice(&t.tag);
            let opened = crypto::gcm_decrypt(key, nonce, &t.aad, &ct_tag);
            if t.result.must_fail() {
                must_fail += 1;
                assert!(
                    opened.is_err(),
                    "tc {} ({}) must fail to open",
                    t.tc_id,
                    t.comment
                );
            } else {
                assert_eq!(&opened.unwrap()[..], &t.pt[..], "tc {}", t.tc_id);
                let sealed = crypto::gcm_encrypt(key, nonce, &t.aad, &t.pt).unwrap();
                assert_eq!(sealed, ct_tag, "tc {}", t.tc_id);
            }
            ran += 1;
        }
    }
    assert!(ran > 50, "only {ran} vectors ran");
    assert!(must_fail > 10, "only {must_fail} invalid vectors ran");
}

#[test]
fn wycheproof_hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut ran = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            let mut out = vec![0u8; t.size];
            let r = crypto::hkdf_sha256(&t.salt, &t.ikm, &t.info, &mut out);
            match t.result {
                TestResult::Invalid => assert!(r.is_err(), "tc {} must fail", t.tc_id),
                _ => {
                    r.unwrap();
                    assert_eq!(&out[..], &t.okm[..], "tc {}", t.tc_id);
                }
            }
            ran += 1;
        }
    }
    assert!(ran > 50, "only {ran} vectors ran");
}

#[test]
fn seal_is_bound_to_label_aad_and_key() {
    let k = crypto::SecretKey::generate();
    let sealed = crypto::seal(&k, crypto::label::RECORD, b"identity", b"payload");
    assert!(crypto::open(&k, crypto::label::RECORD, b"identity", &sealed).is_ok());
    assert!(crypto::open(&k, crypto::label::SUBJECT_ID, b"identity", &sealed).is_err());
    assert!(crypto::open(&k, crypto::label::RECORD, b"identitz", &sealed).is_err());
}
