//! Observe mode's taps (`analyze.enabled`): what a request and its answer
//! looked like, for the recommendations.
//!
//! Why here and not in a layer: the sample needs the answer as the client
//! received it (after cache, shaping, problems) and the bodies as they
//! stream, so the request body is hashed as the upstream reads it
//! ([`ClientBody`]) and the response body as the client reads it
//! ([`TappedBody`]); the sample is recorded when the response body ends (or
//! is dropped, then without a body hash). Off, a request pays one branch.

use super::{Gateway, Route, RouteKind};
use crate::body::Body;
use crate::telemetry::live::Live;
use crate::telemetry::trace::TraceId;
use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use junction_analyze::Sample;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use xxhash_rust::xxh3::Xxh3;

/// Largest response body whose fields are measured.
const MAX_SAMPLED_BODY: usize = 1 << 20;

/// A request body's hash, once it has been read to the end.
#[derive(Debug, Default)]
pub struct BodyDigest {
    hash: AtomicU64,
    done: AtomicBool,
}

impl BodyDigest {
    /// The hash, if the body was read whole.
    pub fn get(&self) -> Option<u64> {
        self.done
            .load(Ordering::Acquire)
            .then(|| self.hash.load(Ordering::Relaxed))
    }

    fn set(&self, hash: u64) {
        self.hash.store(hash, Ordering::Relaxed);
        self.done.store(true, Ordering::Release);
    }
}

/// The client's request body, hashed as it streams when observing.
pub struct ClientBody {
    inner: Incoming,
    digest: Option<(Box<Xxh3>, Arc<BodyDigest>)>,
}

impl ClientBody {
    /// The body as it comes.
    pub fn plain(inner: Incoming) -> Self {
        Self {
            inner,
            digest: None,
        }
    }

    /// The body, hashed as it is read; the digest holds the hash at its end.
    pub fn hashed(inner: Incoming) -> (Self, Arc<BodyDigest>) {
        let digest = Arc::new(BodyDigest::default());
        if inner.is_end_stream() {
            digest.set(Xxh3::new().digest());
            return (Self::plain(inner), digest);
        }
        let body = Self {
            inner,
            digest: Some((Box::default(), digest.clone())),
        };
        (body, digest)
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some((hasher, digest)) = &mut this.digest {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        hasher.update(data);
                    }
                    // Readers may stop polling once the body says it has ended.
                    if this.inner.is_end_stream() {
                        digest.set(hasher.digest());
                    }
                }
                Poll::Ready(None) => digest.set(hasher.digest()),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What observe mode knows of a request before it is served.
pub fn sample_of(
    req: &Request<Incoming>,
    route: &Route,
    client: &std::net::SocketAddr,
    caller: Option<&str>,
) -> Sample {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .ok();
    // Only a trace the caller sent ties its calls together (one Junction
    // starts is new per request).
    let trace = TraceId::sent(req.headers()).map(|t| t.to_string());
    // A catch-all route (observe mode's one route per upstream) is analysed
    // per path template, so each endpoint gets its own advice.
    let catch_all = route.template.contains("{*");
    Sample {
        at_ms,
        route: (!catch_all).then(|| route.name.clone()),
        template: (!catch_all).then(|| route.template.clone()),
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        caller: Some(caller.map_or_else(|| client.ip().to_string(), str::to_owned)),
        trace,
        ..Default::default()
    }
}

impl Gateway {
    /// What the running config already does, so the recommendations skip it.
    pub fn analysis_known(&self) -> junction_analyze::Known {
        let mut known = junction_analyze::Known::default();
        for r in self.routes() {
            if r.cache.is_some() {
                known.cached_routes.insert(r.name.clone());
            }
            if matches!(r.kind, RouteKind::Async(_)) {
                known.async_routes.insert(r.name.clone());
            }
            if r.idempotency.is_some() {
                known.idempotent_routes.insert(r.name.clone());
            }
            if r.projects {
                known.fields_routes.insert(r.name.clone());
            }
        }
        for (name, u) in self.upstreams() {
            known.upstream_timeouts.insert(name.clone(), u.timeout());
        }
        known
    }
}

/// Wraps `resp`'s body so `sample` is completed (size, body hash, sampled
/// fields, the request's hash) and recorded when the body ends.
pub fn observe(
    resp: Response<Body>,
    mut sample: Sample,
    live: Arc<Live>,
    request: Option<Arc<BodyDigest>>,
) -> Response<Body> {
    let json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.contains("json"));
    sample.status = Some(resp.status().as_u16());
    sample.json = Some(json.unwrap_or(false));
    let keep = (json == Some(true) && live.analysis.sample_fields()).then(BytesMut::new);
    let (parts, inner) = resp.into_parts();
    let mut body = TappedBody {
        inner,
        hasher: Box::default(),
        bytes: 0,
        keep,
        pending: Some((sample, live, request)),
    };
    if body.inner.is_end_stream() {
        body.finish(true);
    }
    Response::from_parts(parts, Body::new(body))
}

/// A response body that records its exchange when it ends.
struct TappedBody {
    inner: Body,
    hasher: Box<Xxh3>,
    bytes: u64,
    keep: Option<BytesMut>,
    pending: Option<(Sample, Arc<Live>, Option<Arc<BodyDigest>>)>,
}

impl TappedBody {
    fn finish(&mut self, complete: bool) {
        let Some((mut s, live, request)) = self.pending.take() else {
            return;
        };
        // A body cut short says nothing of the answer's size or content.
        s.response_bytes = complete.then_some(self.bytes);
        s.response_hash = complete.then(|| self.hasher.digest());
        s.request_hash = request.and_then(|d| d.get());
        if complete {
            s.response_fields = self.keep.take().and_then(|b| top_level_fields(&b));
        }
        live.analysis.record(&s);
    }
}

impl HttpBody for TappedBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.hasher.update(data);
                    this.bytes += data.len() as u64;
                    if let Some(buf) = &mut this.keep {
                        if buf.len() + data.len() <= MAX_SAMPLED_BODY {
                            buf.extend_from_slice(data);
                        } else {
                            this.keep = None;
                        }
                    }
                }
                // hyper stops polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TappedBody {
    fn drop(&mut self) {
        // Cut short (the client went away): recorded without a body hash.
        self.finish(false);
    }
}

/// A JSON object's top-level fields and the bytes each takes encoded.
fn top_level_fields(body: &[u8]) -> Option<Vec<(String, u64)>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    Some(
        map.into_iter()
            .map(|(k, v)| {
                let size = serde_json::to_vec(&v).map_or(0, |b| b.len());
                let bytes = (k.len() + 3 + size) as u64;
                (k, bytes)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_sizes_count_key_and_encoded_value() {
        let f = top_level_fields(br#"{"id":"s1","pad":"xxxxxxxxxx"}"#).expect("object");
        assert_eq!(f, vec![("id".into(), 9), ("pad".into(), 18)]);
        assert!(top_level_fields(b"[1,2]").is_none());
    }
}
