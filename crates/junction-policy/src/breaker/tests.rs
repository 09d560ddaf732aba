use super::*;
use tokio::time::advance;

fn cfg() -> BreakerConfig {
    BreakerConfig {
        error_threshold: 0.5,
        min_requests: 4,
        window: Duration::from_secs(10),
        reset_timeout: Duration::from_secs(5),
        half_open_probes: 1,
    }
}

fn fail(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        b.try_acquire().unwrap().failure();
    }
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_min_requests() {
    let b = CircuitBreaker::new(cfg());
    fail(&b, 3);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_threshold() {
    let b = CircuitBreaker::new(cfg());
    for _ in 0..10 {
        b.try_acquire().unwrap().success();
    }
    fail(&b, 9);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open, "10 of 20 reaches 50%");
}

#[tokio::test(start_paused = true)]
async fn open_refuses_until_reset_timeout_then_probes() {
    let b = CircuitBreaker::new(cfg());
    fail(&b, 4);
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.retry_in, Duration::from_secs(5));
    assert_eq!(b.snapshot().next_probe_in, Some(Duration::from_secs(5)));
    advance(Duration::from_millis(4999)).await;
    assert!(b.try_acquire().is_err());
    advance(Duration::from_millis(1)).await;
    let probe = b.try_acquire().expect("probe after reset timeout");
    assert!(probe.is_probe());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.try_acquire().is_err(), "only one probe in flight");
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
    let snap = b.snapshot();
    assert_eq!(snap.calls_in_window, 0, "closing starts a fresh window");
    assert_eq!(snap.times_opened, 1);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_for_another_reset_timeout() {
    let b = CircuitBreaker::new(cfg());
    fail(&b, 4);
    advance(Duration::from_secs(5)).await;
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_in,
        Duration::from_secs(5)
    );
    assert_eq!(b.snapshot().times_opened, 2);
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_frees_its_slot() {
    let b = CircuitBreaker::new(cfg());
    fail(&b, 4);
    advance(Duration::from_secs(5)).await;
    drop(b.try_acquire().unwrap());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire().expect("slot was freed");
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_before_a_transition_are_ignored() {
    let b = CircuitBreaker::new(cfg());
    let slow = b.try_acquire().unwrap();
    fail(&b, 4);
    assert_eq!(b.state(), BreakerState::Open);
    advance(Duration::from_secs(5)).await;
    let probe = b.try_acquire().unwrap();
    slow.success(); // started while closed: must not close a half-open breaker
    assert_eq!(b.state(), BreakerState::HalfOpen);
    probe.failure();
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_age_out_of_the_window() {
    let b = CircuitBreaker::new(cfg());
    fail(&b, 3);
    advance(Duration::from_secs(11)).await;
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().calls_in_window, 1);
}

#[test]
fn gauge_values_match_the_contract() {
    assert_eq!(BreakerState::Closed.as_gauge(), 0);
    assert_eq!(BreakerState::Open.as_gauge(), 1);
    assert_eq!(BreakerState::HalfOpen.as_gauge(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_each_transition_once() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let b = CircuitBreaker::observed(cfg(), move |from, to| log.lock().push((from, to)));
    fail(&b, 4);
    assert!(b.try_acquire().is_err(), "open");
    advance(Duration::from_secs(5)).await;
    let probe = b.try_acquire().expect("half-open probe");
    probe.failure();
    advance(Duration::from_secs(5)).await;
    b.try_acquire().expect("probe").success();
    use BreakerState::*;
    assert_eq!(
        *seen.lock(),
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed)
        ]
    );
}
