//! Shaping what the client gets: `?fields=` projection, the answer's ETag and
//! the client's conditionals (304), byte counts per route (see
//! [`trim`](crate::proxy::trim) for the rules).
//!
//! It sits above storage so that everything below keeps whole answers and
//! one stored response serves every projection; a bad `fields` parameter is
//! refused here, before the cache or the upstream is asked.

use crate::body::Body;
use crate::problem::GatewayError;
use crate::proxy::call::{Answer, Call};
use crate::proxy::trim::{finish, requested_fields, shape_streamed, Shaped};
use crate::proxy::Traffic;
use futures::future::BoxFuture;
use http::{header, HeaderMap, Response};
use junction_cache::FieldSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Adds shaping to a route's stack.
#[derive(Clone)]
pub struct ShapeLayer {
    /// The route's default projection.
    fields: Option<Arc<FieldSet>>,
    traffic: Arc<Traffic>,
    upstream: Arc<str>,
}

impl ShapeLayer {
    /// Shaping with the route's default projection and byte counters.
    pub fn new(fields: Option<Arc<FieldSet>>, traffic: Arc<Traffic>, upstream: &str) -> Self {
        Self {
            fields,
            traffic,
            upstream: upstream.into(),
        }
    }
}

impl<S> Layer<S> for ShapeLayer {
    type Service = Shape<S>;

    fn layer(&self, inner: S) -> Shape<S> {
        Shape {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose answers are shaped for the client.
#[derive(Clone)]
pub struct Shape<S> {
    inner: S,
    layer: ShapeLayer,
}

impl<S> Service<Call> for Shape<S>
where
    S: Service<Call, Response = Answer, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Response<Body>, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let fields = match requested_fields(call.head.uri.query(), self.layer.fields.as_ref()) {
            Ok(f) => f,
            Err(e) => return Box::pin(futures::future::ready(Err(e))),
        };
        call.cx.mark_dispatched();
        let shaped = Shaped {
            fields,
            bytes_in: self.layer.traffic.bytes_in.clone(),
            bytes_out: self.layer.traffic.bytes_out.clone(),
            upstream: self.layer.upstream.clone(),
            buffers: call.cx.gw.buffers.clone(),
        };
        let method = call.head.method.clone();
        let conditions = client_conditions(&call.head.headers);
        let answered = self.inner.call(call);
        Box::pin(async move {
            Ok(match answered.await? {
                Answer::Streamed(resp) => shape_streamed(resp, &method, &conditions, &shaped).await,
                Answer::Whole(w) => finish(
                    w.status,
                    w.headers,
                    w.body,
                    w.etag.as_deref(),
                    &method,
                    &conditions,
                    &shaped,
                ),
                Answer::Ready(resp) => resp,
            })
        })
    }
}

/// The client's conditional headers, which decide a 304 on the way out.
fn client_conditions(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    out
}
