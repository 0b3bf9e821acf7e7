//! Requests tonic refuses before any handler runs, relabelled to the
//! status the spec names:
//!
//! - Oversized: tonic answers OUT_OF_RANGE with a transport-level message
//!   for a message above the decoding limit; the spec names
//!   RESOURCE_EXHAUSTED for size limits, with a message that names the
//!   field and the rule. Values between the value limit and the decoding
//!   limit reach the vault, which refuses them itself.
//! - Undecodable (random bytes, a truncated message, a wrong wire type,
//!   invalid UTF-8 in a string field): tonic answers INTERNAL, which pages
//!   the on-call engineer for a client's bug; the spec says malformed
//!   input is INVALID_ARGUMENT. The decoder's own detail (which names the
//!   message and field) is kept.

use http::{HeaderValue, Response};

const TONIC_TOO_LARGE: &str = "decoded message length too large";
/// How tonic's codec words a request it cannot decode.
const TONIC_UNDECODABLE: &str = "failed to decode Protobuf message";

/// Rewrites tonic's "message too large" status into RESOURCE_EXHAUSTED
/// naming the value limit.
pub fn relabel<B>(max_value_bytes: usize) -> impl Fn(Response<B>) -> Response<B> + Clone {
    move |mut resp| {
        let headers = resp.headers_mut();
        let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
            && headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                // grpc-message is percent-encoded; spaces arrive as %20.
                .is_some_and(|m| m.replace("%20", " ").contains(TONIC_TOO_LARGE));
        if too_large {
            let msg = format!(
                "value: the request is larger than the server accepts; values may be at most {max_value_bytes} bytes"
            );
            headers.insert("grpc-status", HeaderValue::from_static("8"));
            if let Ok(v) = HeaderValue::from_str(&msg) {
                headers.insert("grpc-message", v);
            }
        }
        let undecodable = headers.get("grpc-status").is_some_and(|s| s == "13")
            && headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .is_some_and(|m| m.replace("%20", " ").contains(TONIC_UNDECODABLE));
        if undecodable {
            // The detail stays percent-encoded as it came: grpc-message is.
            let detail = headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .and_then(|m| m.split_once(':').map(|(_, d)| d.trim_start().to_owned()))
                .unwrap_or_default();
            let msg = format!(
                "request:%20not%20a%20valid%20protobuf%20message%20for%20this%20method:%20{detail}"
            );
            headers.insert("grpc-status", HeaderValue::from_static("3"));
            if let Ok(v) = HeaderValue::from_str(&msg) {
                headers.insert("grpc-message", v);
            }
        }
        resp
    }
}
