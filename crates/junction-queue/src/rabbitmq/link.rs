//! An AMQP connection, re-established on demand with backoff, and the
//! confirm-mode channel every publish (events, retries, dead letters) uses.
//!
//! An instance keeps two: one publishes, the other consumes and reads (admin
//! reads, depth counts). An error RabbitMQ raises on a connection closes every
//! channel on it — seen when a consumer starts on a quorum queue declared a
//! moment before (`basic.consume` fails inside the broker with `noproc` and
//! the connection gets INTERNAL_ERROR) — so a consumer's trouble must not
//! fail events being accepted, and a busy publisher being blocked by the
//! broker's flow control must not stall deliveries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::storage;
use crate::types::QueueError;

/// Bound on connecting (and on each reconnection attempt).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest pause between reconnection attempts when the broker keeps refusing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Live {
    conn: Option<Arc<Connection>>,
    publish: Option<Channel>,
    /// Not before this instant is another connection attempt made.
    next_attempt: Instant,
    backoff: Duration,
    /// Whether the loss was logged (once per outage).
    lost_logged: bool,
}

/// The instance's connection to the broker.
pub struct Link {
    url: String,
    /// Connection name shown in RabbitMQ's management UI.
    name: &'static str,
    live: Mutex<Live>,
}

impl Link {
    /// Connects now: an unreachable broker at start is an error.
    pub async fn connect(url: &str, name: &'static str) -> Result<Self, QueueError> {
        let conn = open(url, name).await?;
        Ok(Self {
            url: url.to_owned(),
            name,
            live: Mutex::new(Live {
                conn: Some(Arc::new(conn)),
                publish: None,
                next_attempt: Instant::now(),
                backoff: Duration::from_millis(100),
                lost_logged: false,
            }),
        })
    }

    /// The live connection, re-made if it was lost (at most one attempt per
    /// backoff period, so an outage costs callers a fast error, not a wait).
    pub async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
        let mut live = self.live.lock().await;
        if let Some(c) = &live.conn {
            if c.status().connected() {
                return Ok(c.clone());
            }
            if !live.lost_logged {
                tracing::warn!("rabbitmq connection lost; new events are refused until it is back");
                live.lost_logged = true;
            }
            live.conn = None;
            live.publish = None;
        }
        if Instant::now() < live.next_attempt {
            return Err(storage(
                "rabbitmq is unreachable",
                std::io::Error::other("reconnecting"),
            ));
        }
        match open(&self.url, self.name).await {
            Ok(c) => {
                tracing::info!("rabbitmq connection established");
                let c = Arc::new(c);
                live.conn = Some(c.clone());
                live.backoff = Duration::from_millis(100);
                live.lost_logged = false;
                Ok(c)
            }
            Err(e) => {
                live.next_attempt = Instant::now() + live.backoff;
                live.backoff = (live.backoff * 2).min(MAX_BACKOFF);
                Err(e)
            }
        }
    }

    /// The shared publishing channel, in confirm mode.
    pub async fn publisher(&self) -> Result<Channel, QueueError> {
        {
            let live = self.live.lock().await;
            if let Some(ch) = &live.publish {
                if ch.status().connected() {
                    return Ok(ch.clone());
                }
            }
        }
        let conn = self.connection().await?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| storage("opening a rabbitmq channel", e))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| storage("enabling publisher confirms", e))?;
        self.live.lock().await.publish = Some(ch.clone());
        Ok(ch)
    }

    /// A new channel (consumers, admin reads).
    pub async fn channel(&self) -> Result<Channel, QueueError> {
        self.connection()
            .await?
            .create_channel()
            .await
            .map_err(|e| storage("opening a rabbitmq channel", e))
    }

    /// Closes the connection (shutdown).
    pub async fn close(&self) {
        let conn = self.live.lock().await.conn.take();
        if let Some(c) = conn {
            let _ = c.close(200, "junction shutting down").await;
        }
    }
}

async fn open(url: &str, name: &str) -> Result<Connection, QueueError> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(storage("connecting to rabbitmq", e)),
        Err(_) => Err(storage(
            "connecting to rabbitmq",
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 3s"),
        )),
    }
}
