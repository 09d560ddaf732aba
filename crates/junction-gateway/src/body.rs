//! The body type the gateway sends and receives: boxed, streaming, `Send + Sync`.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Boxed error of a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming HTTP body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Whether `e` or one of its causes is a body-length-limit error.
pub fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The whole of `body`, refused past `max` bytes.
pub async fn collect_limited(mut body: Body, max: usize) -> Result<Bytes, BoxError> {
    // By hand rather than with `Limited`: over a boxed error type, its `Into`
    // bound trips rustc's higher-ranked lifetime check on `Send` futures.
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > max {
                return Err(format!("the body exceeds {max} bytes").into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
