//! `LISTEN` for wake-ups: every instance's consumers learn of new or rescheduled
//! work the moment another instance commits it, without polling.

use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{storage, PostgresBroker};
use crate::types::QueueError;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Listens on `channel` (connecting now, so a bad URL fails the start), then
/// keeps listening in the background, reconnecting with backoff, until the
/// broker is dropped.
pub async fn start(
    weak: Weak<PostgresBroker>,
    url: String,
    channel: String,
) -> Result<(), QueueError> {
    let first = listen(&url, &channel).await?;
    tokio::spawn(async move {
        let mut session = Some(first);
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Some((client, messages)) = session.take() {
                backoff = Duration::from_millis(100);
                let ended = forward(&weak, messages).await;
                drop(client);
                let Some(b) = weak.upgrade() else { return };
                if b.closed.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                tracing::warn!(reason = %ended, "postgres wake-up connection lost; reconnecting");
                // Whatever was announced meanwhile is found by looking again.
                b.wake_all();
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if weak.strong_count() == 0 {
                return;
            }
            match listen(&url, &channel).await {
                Ok(s) => {
                    tracing::info!("postgres wake-up connection re-established");
                    session = Some(s);
                    if let Some(b) = weak.upgrade() {
                        b.wake_all();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "postgres wake-up reconnect failed"),
            }
        }
    });
    Ok(())
}

type Messages = futures::stream::BoxStream<'static, Result<AsyncMessage, tokio_postgres::Error>>;

/// A connection that has run `LISTEN channel`, and its stream of messages.
async fn listen(
    url: &str,
    channel: &str,
) -> Result<(tokio_postgres::Client, Messages), QueueError> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| storage("connecting to postgres for wake-ups", e))?;
    let mut messages: Messages =
        futures::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed();
    let sql = format!("LISTEN {channel}");
    {
        let listening = client.batch_execute(&sql);
        tokio::pin!(listening);
        // The connection must be driven while the LISTEN runs.
        loop {
            tokio::select! {
                r = &mut listening => {
                    r.map_err(|e| storage("listening for wake-ups", e))?;
                    break;
                }
                m = messages.next() => {
                    if let Some(Err(e)) = m {
                        return Err(storage("listening for wake-ups", e));
                    }
                }
            }
        }
    }
    Ok((client, messages))
}

/// Wakes the named subscriber's consumers per notification; returns why it stopped.
async fn forward(weak: &Weak<PostgresBroker>, mut messages: Messages) -> String {
    while let Some(m) = messages.next().await {
        match m {
            Ok(AsyncMessage::Notification(n)) => match weak.upgrade() {
                Some(b) => b.wake_local(n.payload()),
                None => return "broker dropped".into(),
            },
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
    "connection closed".into()
}
