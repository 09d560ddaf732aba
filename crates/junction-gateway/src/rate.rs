//! Token-bucket rate limiters (governor), built one way for routes and subscribers.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// `count` per `per`, one token every `per / count`, with at most `burst`
/// taken at once (at least 1): no window of `per` admits more than
/// `count + burst - 1`.
pub fn limiter(count: u32, per: Duration, burst: u32) -> DefaultDirectRateLimiter {
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    let quota = Quota::with_period((per / count.max(1)).max(Duration::from_nanos(1)))
        .expect("a non-zero period")
        .allow_burst(burst);
    RateLimiter::direct(quota)
}
