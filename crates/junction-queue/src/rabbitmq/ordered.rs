//! The ordered side of a subscription: finding out that a topic gets keyed
//! events, consuming the subscriber's partition queues one delivery at a time,
//! and holding an ordered retry in place.
//!
//! A subscription cannot know whether a keyed event was ever published to its
//! topic (another instance may publish it), so until this instance knows, it
//! asks the broker, at most once per topic every ~2 s for all of this
//! instance's subscriptions: an empty probe published `mandatory` to the
//! topic's marker queue, routed once the marker exists, returned before (see
//! [`super::topology`] for why not a passive declare). Once found, the
//! subscription declares its subscriber's partition queues itself
//! (idempotent: the publisher declared them for the subscribers it named, not
//! necessarily for this one) and consumes every one of them.
//!
//! A retry of a partition delivery is not published to a delay queue (the
//! message would come back behind later ones of its key): the delivery stays
//! unacked, so with a prefetch of 1 nothing else of its partition is
//! delivered, and after `after` it is handed again to `next`, same ack handle,
//! one attempt more in its envelope. If the subscription's channels were
//! reopened meanwhile, the broker has requeued it already (to this instance or
//! another), and the held one is dropped.

use std::time::Duration;

use futures::FutureExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::{storage, Shared};
use crate::types::QueueError;

/// Unacked deliveries per partition consumer: one, so a partition's next
/// message waits until the one out is settled.
const PARTITION_PREFETCH: u16 = 1;

/// How long a lane waits for the broker's answer to a marker probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether `topic` gets keyed events: known here, or found on the broker now
/// (asked at most once per topic per period).
pub async fn is_ordered(shared: &Shared, topic: &str) -> bool {
    let topology = &shared.topology;
    if topology.is_ordered(topic) {
        return true;
    }
    if !topology.ordered_check_due(topic) {
        return false;
    }
    // On the publishing channel: the default exchange always exists, so the
    // probe never fails a channel, whatever the answer.
    let Ok(ch) = shared.link.publisher().await else {
        return false;
    };
    let probe = async {
        ch.basic_publish(
            "",
            &topology.keyed_marker(topic),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &[],
            BasicProperties::default(),
        )
        .await?
        .await
    };
    // Routed (and dropped by the marker): it exists. Returned: not yet. No
    // answer in time (a blocked or half-open publishing connection): unknown,
    // asked again later; a lane must not wait on it, its main queue flows.
    let answer = tokio::time::timeout(PROBE_TIMEOUT, probe).await;
    let found = matches!(answer, Ok(Ok(Confirmation::Ack(None))));
    if found {
        topology.found_ordered(topic);
    }
    found
}

/// A channel consuming every partition queue of (`topic`, `sub`) with a
/// prefetch of 1 per consumer, and its consumers (in partition order).
pub async fn consume_partitions(
    shared: &Shared,
    topic: &str,
    sub: &str,
) -> Result<(Channel, Vec<lapin::Consumer>), QueueError> {
    let ch = shared.consume.channel().await?;
    let mut consumers = Vec::new();
    let started = async {
        shared
            .topology
            .ensure_ordered(&ch, topic, &[sub.to_owned()])
            .await?;
        // Per consumer (not global): each partition one delivery at a time.
        ch.basic_qos(PARTITION_PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|e| storage("setting prefetch", e))?;
        for queue in shared.topology.partition_queues(topic, sub) {
            let consumer = ch
                .basic_consume(
                    &queue,
                    "",
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| storage("starting a rabbitmq consumer", e))?;
            consumers.push(consumer);
        }
        Ok::<_, QueueError>(())
    }
    .await;
    match started {
        Ok(()) => Ok((ch, consumers)),
        Err(e) => {
            // The channel before its consumers: see `close_now`.
            close_now(&ch);
            drop(consumers);
            Err(e)
        }
    }
}

/// Closes `ch`, the close queued before this returns. Called before its
/// consumers are dropped: a dropped consumer sends `basic.cancel`, and a
/// single-active-consumer queue answers a cancel by activating another
/// consumer while this channel still holds a delivery of the partition,
/// which would come back (at the channel's close) behind the next one.
/// Closing first returns what the channel held before anyone else is given
/// the queue.
pub fn close_now(ch: &Channel) {
    // The first poll sends `channel.close`; the answer is not waited for.
    let _ = ch.close(200, "reopening").now_or_never();
}
