//! `Debug` for generated messages that carry record values, API keys or
//! plaintext subject ids (`build.rs` tells prost not to derive it): they
//! print their type name only, so no log line can leak them.

use std::fmt;

use super::pb;

macro_rules! redacted_debug {
    ($($t:ident),* $(,)?) => {
        $(impl fmt::Debug for pb::$t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), " { <redacted> }"))
            }
        })*
    };
}

redacted_debug!(
    PutRecordRequest,
    GetRecordRequest,
    DeleteRecordRequest,
    ListRecordsRequest,
    Record,
    CreatePrincipalResponse,
    CreateApiKeyResponse,
    ExportSubjectRequest,
    ExportSubjectResponse,
    SubjectHeader,
    ShredSubjectRequest,
    ReencryptDataKeysRequest,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let r = pb::Record {
            subject: "alice@example.com".into(),
            value: b"CANARY".to_vec(),
            ..Default::default()
        };
        let k = pb::CreatePrincipalResponse {
            api_key: "sbk_secret".into(),
            ..Default::default()
        };
        let out = format!("{r:?} {k:?}");
        assert!(
            !out.contains("alice") && !out.contains("CANARY") && !out.contains("sbk_"),
            "{out}"
        );
    }
}
