//! The single-threaded Tokio runtimes of the thread-per-core parts: the data
//! plane (`server.rs`) and the delivery threads (`pipeline/threads.rs`).

use std::io;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Period of the timer kept armed on every such runtime.
///
/// Timers due later than this never wake their own thread when they are set;
/// request timeouts are seconds long, so theirs do not.
const ANCHOR_PERIOD: Duration = Duration::from_millis(500);

/// A current-thread runtime with I/O and time, with one timer always armed; its
/// ticks also close the thread's expired idle upstream connections.
///
/// Why the armed timer: Tokio's time driver remembers when it must next wake
/// (`next_wake`) only when it parks or fires timers. While no timer is set,
/// that is "never", and every timer set before the next park then writes to the
/// runtime's eventfd to wake the very thread that is setting it. Each request
/// and delivery sets a timeout, so after any quiet moment every one of them
/// paid that syscall, plus a needless wake-up: measured on the delivery drain,
/// one eventfd write per four deliveries, the largest syscall count after the
/// socket reads and writes. With a short periodic timer always set, the driver
/// always has an earlier wake than any timeout, and setting a timeout is a
/// plain insert into the timer wheel.
pub fn current_thread() -> io::Result<Runtime> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.spawn(async {
        let mut tick = tokio::time::interval(ANCHOR_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            crate::proxy::pool::sweep();
        }
    });
    Ok(rt)
}
