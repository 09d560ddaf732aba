//! What travels down a route's stack ([`super::stack`]): the request with its
//! context, and the answer of the services under the shape layer. A leaf:
//! every layer uses it, it uses none of them.

use super::pool::UpstreamBody;
use super::upstream::RequestBody;
use super::{Gateway, Route};
use crate::body::Body;
use crate::buffers::{BufferBudget, Held, Site};
use crate::telemetry::live::Client;
use bytes::Bytes;
use http::{request, HeaderMap, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// One request on its way down a route's stack.
pub struct Call {
    /// The client's request head (a cache fetch sends its own).
    pub head: request::Parts,
    /// The request body, as the client sends it or already read.
    pub body: CallBody,
    /// What every layer may need to know about the request.
    pub cx: Arc<CallContext>,
}

/// A request body on its way down the stack.
pub enum CallBody {
    /// Still arriving from the client.
    Client(super::tap::ClientBody),
    /// Read (or wrapped) by a layer above.
    Ready(RequestBody),
}

impl CallBody {
    /// The whole body, within `max` bytes (413 past it), counted in
    /// `buffers` while held (503 past the budget: nothing was done yet).
    pub async fn collect(
        self,
        max: u64,
        buffers: &Arc<BufferBudget>,
        site: Site,
    ) -> Result<Held, crate::problem::GatewayError> {
        let read = match self {
            CallBody::Client(body) => {
                if http_body::Body::size_hint(&body).lower() > max {
                    return Err(crate::problem::GatewayError::BodyTooLarge { limit: max });
                }
                buffers.collect(body, max as usize, site, true).await
            }
            CallBody::Ready(RequestBody::Replayable(bytes)) => return Ok(Held::uncounted(bytes)),
            CallBody::Ready(RequestBody::Once(body, _)) => {
                buffers.collect(body, max as usize, site, true).await
            }
        };
        read.map_err(|e| e.for_request(max))
    }
}

/// The request's context: the gateway and route serving it, and what the
/// access log wants to know afterwards.
pub struct CallContext {
    /// The gateway the request started on (a reload does not change it).
    pub gw: Arc<Gateway>,
    /// The matched route.
    pub route: Arc<Route>,
    /// The route's path parameters.
    pub params: Vec<(String, String)>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as an `X-Forwarded-For` entry.
    pub peer_ip: http::HeaderValue,
    attempts: AtomicU32,
    dispatched: AtomicBool,
    upstream_succeeded: AtomicBool,
}

impl CallContext {
    /// The context of a request `route` serves.
    pub fn new(
        gw: Arc<Gateway>,
        route: Arc<Route>,
        params: Vec<(String, String)>,
        client: &Client,
    ) -> Self {
        Self {
            gw,
            route,
            params,
            peer: client.addr,
            peer_ip: client.ip.clone(),
            attempts: AtomicU32::new(0),
            dispatched: AtomicBool::new(false),
            upstream_succeeded: AtomicBool::new(false),
        }
    }

    /// A fresh context for more work on the same request's behalf (a
    /// background revalidation), so it records nothing on the answered one.
    pub fn detached(&self) -> Arc<Self> {
        Arc::new(Self {
            gw: self.gw.clone(),
            route: self.route.clone(),
            params: self.params.clone(),
            peer: self.peer,
            peer_ip: self.peer_ip.clone(),
            attempts: AtomicU32::new(0),
            dispatched: AtomicBool::new(false),
            upstream_succeeded: AtomicBool::new(false),
        })
    }

    /// Records that the upstream answered this request with a 2xx.
    pub fn mark_upstream_succeeded(&self) {
        self.upstream_succeeded.store(true, Ordering::Relaxed);
    }

    /// Whether the upstream itself answered this request with a 2xx (not a
    /// replay, not a stored answer).
    pub fn upstream_succeeded(&self) -> bool {
        self.upstream_succeeded.load(Ordering::Relaxed)
    }

    /// Records the attempts sent upstream for this request.
    pub fn set_attempts(&self, attempts: u32) {
        self.attempts.store(attempts, Ordering::Relaxed);
    }

    /// Attempts sent upstream (0: answered without the upstream).
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Marks the request as handed to the route's callee (the access log then names it).
    pub fn mark_dispatched(&self) {
        self.dispatched.store(true, Ordering::Relaxed);
    }

    /// Whether the request got past the checks in front of the route's callee.
    pub fn dispatched(&self) -> bool {
        self.dispatched.load(Ordering::Relaxed)
    }
}

/// What the services under the shape layer answer.
pub enum Answer {
    /// The upstream's response, its body still streaming.
    Streamed(Response<UpstreamBody>),
    /// A whole response (from storage, or read to be stored).
    Whole(WholeAnswer),
    /// A response needing no shaping (a problem the cache labels).
    Ready(Response<Body>),
}

/// A whole response and its validator.
pub struct WholeAnswer {
    /// The status code.
    pub status: u16,
    /// The headers to send (hop-by-hop ones removed).
    pub headers: HeaderMap,
    /// The body before projection.
    pub body: Bytes,
    /// The entity tag of `body`, when the answer has one.
    pub etag: Option<String>,
}
