//! Recording delivery outcomes: the scripts that settle a delivery, the
//! backlog of outcomes kept while Redis is unreachable, lease renewal.

use redis::Value;

use super::backlog::{Held, Op};
use super::codec::storage;
use super::{RedisBroker, CALL_TIMEOUT};
use crate::types::now_ms;
use crate::types::*;

/// Why a script did not run.
pub(super) struct Failure {
    /// Redis could not be reached (or did not answer in time), as opposed to refusing.
    pub unreachable: bool,
    pub error: QueueError,
}

impl RedisBroker {
    /// Like [`run`](Self::run), saying whether a failure was Redis being unreachable.
    pub(super) async fn try_run(
        &self,
        what: &str,
        script: &redis::Script,
        args: Vec<Vec<u8>>,
    ) -> Result<Value, Failure> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(&self.cfg.prefix)
            .arg(now_ms())
            .arg(self.cfg.completed_retention.as_millis() as u64);
        for a in args {
            invocation.arg(a);
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<Value>(&mut conn)).await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure {
                unreachable: e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error(),
                error: storage(what, e),
            }),
            Err(e) => Err(Failure {
                unreachable: true,
                error: storage(what, e),
            }),
        }
    }

    /// Runs an outcome's script; while Redis is unreachable (or outcomes from
    /// that time still wait), keeps it in the backlog instead. `Ok(false)`: kept.
    pub(super) async fn record(&self, outcome: Held) -> Result<bool, QueueError> {
        if self.backlog.len() > 0 {
            self.hold(outcome);
            return Ok(false);
        }
        match self.apply(&outcome).await {
            Ok(()) => Ok(true),
            Err(f) if f.unreachable => {
                tracing::warn!(error = %f.error, "redis unreachable; the delivery outcome is kept and recorded when it is back");
                self.hold(outcome);
                Ok(false)
            }
            Err(f) => Err(f.error),
        }
    }

    /// Runs an outcome's script. Once Redis has answered, recorded or refused,
    /// the outcome is settled: its lease is no longer renewed.
    async fn apply(&self, outcome: &Held) -> Result<(), Failure> {
        let script = self.script_of(outcome.op);
        let ran = self
            .try_run("recording a delivery outcome", script, outcome.args.clone())
            .await;
        match &ran {
            Err(f) if f.unreachable => {}
            Ok(reply) => {
                self.take_depth(reply);
                self.forget_lease(outcome);
            }
            Err(_) => self.forget_lease(outcome),
        }
        ran.map(|_| ())
    }

    /// Stops renewing the lease of a delivery whose outcome is settled.
    fn forget_lease(&self, outcome: &Held) {
        let id = String::from_utf8_lossy(&outcome.args[0]);
        self.leases.remove(&outcome.subscriber, &id);
    }

    /// Pushes the expiry of every lease this instance still holds forward.
    pub(super) async fn renew_leases(&self) {
        let until = now_ms() + self.cfg.lease_ttl.as_millis() as u64;
        for (sub, ids) in self.leases.snapshot() {
            for chunk in ids.chunks(500) {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(self.key(&format!("lease:{sub}"))).arg("XX");
                for id in chunk {
                    cmd.arg(until).arg(id);
                }
                if let Err(e) = self.query::<i64>("renewing leases", &cmd).await {
                    tracing::debug!(error = %e, "leases not renewed this time");
                }
            }
        }
    }

    fn hold(&self, outcome: Held) {
        if !self.backlog.push(outcome) {
            tracing::warn!("too many unrecorded delivery outcomes; the oldest was dropped (its delivery goes out again when its lease expires)");
        }
    }

    fn script_of(&self, op: Op) -> &redis::Script {
        match op {
            Op::Settle => &self.scripts.settle,
            Op::Release => &self.scripts.release,
        }
    }

    /// Records what the backlog holds, in order, until Redis fails again.
    pub(super) async fn drain_backlog(&self) {
        let mut waiting = self.backlog.take();
        while let Some(outcome) = waiting.pop_front() {
            match self.apply(&outcome).await {
                Ok(()) => self.wake_local(&outcome.subscriber),
                Err(f) if f.unreachable => {
                    waiting.push_front(outcome);
                    self.backlog.put_back(waiting);
                    return;
                }
                Err(f) => {
                    tracing::error!(error = %f.error, "a delivery outcome was refused; its delivery goes out again when its lease expires");
                }
            }
        }
    }

    pub(super) async fn settle(
        &self,
        d: &Lease,
        mode: &str,
        attempt: &AttemptRecord,
        next_at: u64,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.check_open()?;
        let record = super::codec::attempt_record(attempt);
        let outcome = Held {
            op: Op::Settle,
            args: vec![
                d.message.id.as_str().into(),
                d.subscriber.as_bytes().to_vec(),
                mode.into(),
                record.into_bytes(),
                next_at.to_string().into_bytes(),
                reason.as_bytes().to_vec(),
            ],
            subscriber: d.subscriber.clone(),
        };
        if self.record(outcome).await? && mode == "retry" {
            self.wake_local(&d.subscriber);
        }
        Ok(())
    }
}
