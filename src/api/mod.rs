//! The gRPC edge: the only module that knows tonic and the generated
//! protobuf types. Each handler authenticates the caller, parses the request
//! into domain types (`ids`), asks `authz` for a permit, calls the `vault`
//! use case and translates the answer. Errors become statuses in
//! `status.rs`, nowhere else.

mod convert;
pub mod flood;
pub mod limits;
mod redact;
mod services;
pub mod size_limit;
mod status;

pub use services::Api;

/// Generated protobuf messages, services and clients of `strongbox.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("strongbox.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/strongbox_descriptor.bin"));
}
