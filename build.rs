//! Compiles `proto/strongbox/v1/*.proto` with protox (pure Rust, no system
//! `protoc`) and generates the tonic services and a descriptor set for
//! server reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &["proto/strongbox/v1/strongbox.proto"];

/// Messages that carry record values, API keys or plaintext subject ids:
/// prost derives no `Debug` for them; `api::redact` writes a redacted one.
const NO_DEBUG: &[&str] = &[
    ".strongbox.v1.PutRecordRequest",
    ".strongbox.v1.GetRecordRequest",
    ".strongbox.v1.DeleteRecordRequest",
    ".strongbox.v1.ListRecordsRequest",
    ".strongbox.v1.Record",
    ".strongbox.v1.CreatePrincipalResponse",
    ".strongbox.v1.CreateApiKeyResponse",
    ".strongbox.v1.ExportSubjectRequest",
    ".strongbox.v1.ExportSubjectResponse",
    ".strongbox.v1.SubjectHeader",
    ".strongbox.v1.ShredSubjectRequest",
    ".strongbox.v1.ReencryptDataKeysRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("strongbox_descriptor.bin"), descriptor)?;
    tonic_prost_build::configure()
        .skip_debug(NO_DEBUG.iter().copied())
        .compile_fds(fds)?;
    Ok(())
}
