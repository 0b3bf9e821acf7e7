//! Deletion receipts: what a shred signs, and how a stored one reads back.

use super::*;
use crate::crypto::{self};

/// Proof of a subject shred, MAC'd under the vault's receipt key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionReceipt {
    pub receipt_id: String,
    pub tenant: String,
    pub subject_blind_id: Vec<u8>,
    pub destroyed_key_ids: Vec<String>,
    pub records_made_unreadable: u64,
    pub shredded_at: i64,
    pub reason: ShredReason,
    pub mac: Vec<u8>,
}

impl DeletionReceipt {
    /// The bytes the MAC covers: every field but the MAC, length-prefixed.
    pub(super) fn canonical(&self) -> Vec<u8> {
        let keys = self.destroyed_key_ids.join(",");
        let records = self.records_made_unreadable.to_be_bytes();
        let at = self.shredded_at.to_be_bytes();
        let mut fields: Vec<&[u8]> = vec![
            b"strongbox/v1/deletion-receipt",
            self.receipt_id.as_bytes(),
            self.tenant.as_bytes(),
            &self.subject_blind_id,
            keys.as_bytes(),
            &records,
            &at,
        ];
        // A reason other than the person's request is appended after its
        // name, so every receipt issued before reasons existed verifies.
        if self.reason != ShredReason::Request {
            fields.extend([&b"reason"[..], self.reason.as_str().as_bytes()]);
        }
        crypto::encode_fields(&fields)
    }

    /// A stored receipt back from its canonical bytes and MAC.
    pub(super) fn from_stored(body: &[u8], mac: Vec<u8>) -> Option<DeletionReceipt> {
        let f = crypto::decode_fields(body)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let reason = match f.get(7..) {
            None | Some([]) => ShredReason::Request,
            Some([name, r]) if name == b"reason" && r == b"retention" => ShredReason::Retention,
            _ => return None,
        };
        if f.first()?.as_slice() != b"strongbox/v1/deletion-receipt" {
            return None;
        }
        let keys = text(f.get(4)?)?;
        Some(DeletionReceipt {
            receipt_id: text(f.get(1)?)?,
            tenant: text(f.get(2)?)?,
            subject_blind_id: f.get(3)?.clone(),
            destroyed_key_ids: if keys.is_empty() {
                Vec::new()
            } else {
                keys.split(',').map(str::to_owned).collect()
            },
            records_made_unreadable: u64::from_be_bytes(f.get(5)?.as_slice().try_into().ok()?),
            shredded_at: i64::from_be_bytes(f.get(6)?.as_slice().try_into().ok()?),
            reason,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    #[test]
    fn the_receipt_mac_input_is_as_stored() {
        // Golden vector: receipts already issued must keep verifying.
        let r = DeletionReceipt {
            receipt_id: "rcpt-1".into(),
            tenant: "acme".into(),
            subject_blind_id: vec![1; 32],
            destroyed_key_ids: vec!["dek-1".into(), "dek-2".into()],
            records_made_unreadable: 5,
            shredded_at: 1_700_000_000_000,
            reason: ShredReason::Request,
            mac: vec![],
        };
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(
            hex::encode(crypto::hmac_sha256(&key, &[&r.canonical()])),
            "258e105aa1123a3832d414d8edd81df1f69f6f0df0363e1b69d3fe6424397cd5"
        );
    }

    #[test]
    fn a_stored_receipt_reads_back_whole() {
        for reason in [ShredReason::Request, ShredReason::Retention] {
            let r = DeletionReceipt {
                receipt_id: "rcpt-1".into(),
                tenant: "t".into(),
                subject_blind_id: vec![1; 32],
                destroyed_key_ids: vec!["dek-1".into(), "dek-2".into()],
                records_made_unreadable: 5,
                shredded_at: 10,
                reason,
                mac: vec![9; 32],
            };
            assert_eq!(
                DeletionReceipt::from_stored(&r.canonical(), r.mac.clone()),
                Some(r)
            );
        }
        assert_eq!(DeletionReceipt::from_stored(b"junk", vec![]), None);
    }

    #[test]
    fn receipt_mac_covers_every_field() {
        let r = DeletionReceipt {
            receipt_id: "r".into(),
            tenant: "t".into(),
            subject_blind_id: vec![1; 32],
            destroyed_key_ids: vec!["dek-1".into()],
            records_made_unreadable: 5,
            shredded_at: 10,
            reason: ShredReason::Request,
            mac: vec![],
        };
        let base = r.canonical();
        let variants = [
            DeletionReceipt {
                receipt_id: "x".into(),
                ..r.clone()
            },
            DeletionReceipt {
                tenant: "x".into(),
                ..r.clone()
            },
            DeletionReceipt {
                subject_blind_id: vec![2; 32],
                ..r.clone()
            },
            DeletionReceipt {
                destroyed_key_ids: vec!["dek-2".into()],
                ..r.clone()
            },
            DeletionReceipt {
                records_made_unreadable: 6,
                ..r.clone()
            },
            DeletionReceipt {
                shredded_at: 11,
                ..r.clone()
            },
            DeletionReceipt {
                reason: ShredReason::Retention,
                ..r.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.canonical(), base);
        }
    }
}
