//! One error for a failed upstream call, modelled on `pingora-error`: what
//! went wrong ([`UpstreamErrorKind`]), whether sending the request again is
//! safe ([`RetrySafety`]), and the cause chain. It knows no HTTP: the gateway
//! classifies where a call fails (the attempt, a body read) and maps the
//! error to a status and problem+json in exactly one place.

use std::time::Duration;

/// What went wrong with an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// No connection could be made: nothing reached the upstream.
    Connect,
    /// No response headers within the per-attempt timeout.
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// The exchange broke once the request was under way (a reset, bad
    /// framing, a response body that stopped).
    Broken,
    /// The upstream's circuit breaker is open: Junction sent nothing.
    BreakerOpen {
        /// Until the next probe.
        retry_in: Duration,
    },
    /// The upstream's concurrency limit is reached: Junction sent nothing.
    Overloaded {
        /// The limit.
        max: usize,
    },
}

/// Whether the same request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySafety {
    /// Nothing reached the upstream: safe for any method.
    Safe,
    /// The upstream may have acted on it: only an idempotent request (or a
    /// route that opted in) may be sent again.
    IfIdempotent,
    /// Sending it again now cannot help (Junction refused it itself, or the
    /// answer was already under way).
    No,
}

/// A failed upstream call.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UpstreamError {
    /// The upstream's configured name.
    pub upstream: String,
    /// What went wrong.
    pub kind: UpstreamErrorKind,
    /// Whether the request may be sent again.
    pub retry: RetrySafety,
    /// What was being done, when it adds to the kind ("reading the response body").
    context: Option<&'static str>,
    /// The cause.
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl UpstreamError {
    /// An error of `kind` with the retry safety that kind implies.
    pub fn new(upstream: &str, kind: UpstreamErrorKind) -> Self {
        let retry = match kind {
            UpstreamErrorKind::Connect => RetrySafety::Safe,
            UpstreamErrorKind::Timeout { .. } => RetrySafety::IfIdempotent,
            UpstreamErrorKind::Broken
            | UpstreamErrorKind::BreakerOpen { .. }
            | UpstreamErrorKind::Overloaded { .. } => RetrySafety::No,
        };
        Self {
            upstream: upstream.to_owned(),
            kind,
            retry,
            context: None,
            source: None,
        }
    }

    /// The exchange broke while doing `context` (e.g. reading the response body).
    pub fn broken(
        upstream: &str,
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::new(upstream, UpstreamErrorKind::Broken)
            .with_context(context)
            .with_source(source)
    }

    /// Adds the cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Adds what was being done.
    pub fn with_context(mut self, context: &'static str) -> Self {
        self.context = Some(context);
        self
    }

    /// Junction refused the call itself (breaker open, concurrency limit):
    /// nothing was sent, so it is no attempt and no failure of the upstream.
    pub fn refused_here(&self) -> bool {
        matches!(
            self.kind,
            UpstreamErrorKind::BreakerOpen { .. } | UpstreamErrorKind::Overloaded { .. }
        )
    }

    /// The cause chain, joined (empty without a cause).
    pub fn cause(&self) -> String {
        self.source
            .as_deref()
            .map(|s| error_chain(s as &(dyn std::error::Error + 'static)))
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        let upstream = &self.upstream;
        match self.kind {
            UpstreamErrorKind::Timeout { after } => {
                format!("upstream {upstream} did not answer within {after:?}")
            }
            UpstreamErrorKind::BreakerOpen { retry_in } => format!(
                "upstream {upstream} is failing; its circuit breaker is open (next probe in {retry_in:?})"
            ),
            UpstreamErrorKind::Overloaded { max } => {
                format!("upstream {upstream} has {max} calls in flight, its limit")
            }
            UpstreamErrorKind::Connect | UpstreamErrorKind::Broken => {
                let mut s = format!("upstream {upstream} is unreachable");
                for part in [self.context.map(str::to_owned), Some(self.cause())]
                    .into_iter()
                    .flatten()
                    .filter(|p| !p.is_empty())
                {
                    s.push_str(": ");
                    s.push_str(&part);
                }
                s
            }
        }
    }
}

/// The error and its causes, joined, for a useful `detail`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_says_whether_a_retry_is_safe() {
        let safety = |kind| UpstreamError::new("u", kind).retry;
        assert_eq!(safety(UpstreamErrorKind::Connect), RetrySafety::Safe);
        assert_eq!(
            safety(UpstreamErrorKind::Timeout {
                after: Duration::from_secs(1)
            }),
            RetrySafety::IfIdempotent
        );
        assert_eq!(safety(UpstreamErrorKind::Broken), RetrySafety::No);
        assert_eq!(
            safety(UpstreamErrorKind::Overloaded { max: 1 }),
            RetrySafety::No
        );
    }

    #[test]
    fn the_cause_chain_is_kept_and_shown() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = UpstreamError::broken("inventory", "reading the response body", io);
        assert_eq!(
            e.to_string(),
            "upstream inventory is unreachable: reading the response body: reset by peer"
        );
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert!(!e.refused_here());
    }
}
