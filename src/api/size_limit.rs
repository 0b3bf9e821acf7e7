//! Oversized requests: tonic refuses a message above the decoding limit
//! with OUT_OF_RANGE and a transport-level message, before any handler
//! runs. The spec names RESOURCE_EXHAUSTED for size limits, with a message
//! that names the field and the rule, so this layer relabels exactly that
//! refusal. Values between the value limit and the decoding limit reach
//! the vault, which refuses them itself.

use http::{HeaderValue, Response};

const TONIC_TOO_LARGE: &str = "decoded message length too large";

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
        resp
    }
}
