//! The route's rate limit: a request over it is refused with 429 and
//! `Retry-After` before anything else is done for it.

use crate::problem::GatewayError;
use futures::future::{self, Either, Ready};
use governor::clock::{Clock, DefaultClock};
use governor::DefaultDirectRateLimiter;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Wraps a route's stack in its rate limiter (kept across reloads by `RateLimits`).
#[derive(Clone)]
pub struct RateLimitLayer {
    route: Arc<str>,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl RateLimitLayer {
    /// The limit of `route`.
    pub fn new(route: &str, limiter: Arc<DefaultDirectRateLimiter>) -> Self {
        Self {
            route: route.into(),
            limiter,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limit: self.clone(),
        }
    }
}

/// A service behind a rate limit.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limit: RateLimitLayer,
}

impl<S, R> Service<R> for RateLimit<S>
where
    S: Service<R, Error = GatewayError>,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = Either<Ready<Result<S::Response, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        match self.limit.limiter.check() {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(not_until) => Either::Left(future::ready(Err(GatewayError::RateLimited {
                route: self.limit.route.to_string(),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }))),
        }
    }
}
