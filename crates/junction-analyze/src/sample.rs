//! One observed exchange, from the live data plane or a line of an access log.
//!
//! Every field a source may lack is an `Option`: the recorder counts which
//! ones it saw, and the report says which recommendations it could not make
//! without them (no body hash, no caller, no timestamps).

use serde::Serialize;

/// The methods Junction routes (and so the only ones a recommendation names).
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// One request and its answer, as far as the source knows them.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When the request started (unix ms); `None` when the source has no clock.
    pub at_ms: Option<u64>,
    /// The configured route that served it (live, Junction's log).
    pub route: Option<String>,
    /// The route's path template (`/orders/{id}`); derived from `path` when absent.
    pub template: Option<String>,
    /// The upstream that answered (or the service the log belongs to).
    pub upstream: Option<String>,
    /// The request method, upper case.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// The calling system (caller header, or client address).
    pub caller: Option<String>,
    /// The trace the caller sent (its own `traceparent`), tying a caller's calls together.
    pub trace: Option<String>,
    /// Response status; `None` when the log does not say.
    pub status: Option<u16>,
    /// Time to answer, in microseconds.
    pub latency_us: u64,
    /// Response body bytes.
    pub response_bytes: Option<u64>,
    /// Hash of the response body (whether responses repeat).
    pub response_hash: Option<u64>,
    /// Hash of the request body (whether requests repeat); `Some(0)`-free: absent when unknown.
    pub request_hash: Option<u64>,
    /// Whether the response is JSON.
    pub json: Option<bool>,
    /// Top-level fields of a sampled JSON response and their encoded sizes.
    pub response_fields: Option<Vec<(String, u64)>>,
}

impl Sample {
    /// Whether the method is read-only (GET, HEAD).
    pub fn is_read(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD")
    }

    /// The fields a `?fields=a,b.c` query asks for (top-level names).
    pub fn fields_asked(&self) -> Vec<String> {
        let Some(q) = &self.query else {
            return Vec::new();
        };
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("fields="))
            .flat_map(|v| {
                v.replace("%2C", ",")
                    .replace("%2c", ",")
                    .split(',')
                    .map(|f| f.split('.').next().unwrap_or(f).to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|f| !f.is_empty())
            .collect()
    }
}

/// Which optional fields a source provided, counted over the samples.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Presence {
    /// Samples seen.
    pub samples: u64,
    /// With a timestamp.
    pub time: u64,
    /// With a status.
    pub status: u64,
    /// With a caller.
    pub caller: u64,
    /// With a caller's trace id.
    pub trace: u64,
    /// With the response size.
    pub bytes: u64,
    /// With a response body hash.
    pub response_hash: u64,
    /// With a request body hash (writes).
    pub request_hash: u64,
    /// Writes seen (POST, PUT, PATCH, DELETE).
    pub writes: u64,
    /// With the response's content type known.
    pub json_known: u64,
}

impl Presence {
    /// Counts what `s` carries.
    pub fn count(&mut self, s: &Sample) {
        self.samples += 1;
        self.time += u64::from(s.at_ms.is_some());
        self.status += u64::from(s.status.is_some());
        self.caller += u64::from(s.caller.is_some());
        self.trace += u64::from(s.trace.is_some());
        self.bytes += u64::from(s.response_bytes.is_some());
        self.response_hash += u64::from(s.response_hash.is_some());
        self.json_known += u64::from(s.json.is_some());
        if !s.is_read() {
            self.writes += 1;
            self.request_hash += u64::from(s.request_hash.is_some());
        }
    }
}

/// A route template for a raw path: segments that look like identifiers
/// (digits, UUIDs, long tokens) become `{id}` (`{id2}`… when several), so
/// `/orders/42` and `/orders/43` are one endpoint.
pub fn template_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut params = 0;
    for seg in path.split('/').skip(1) {
        out.push('/');
        if looks_like_id(seg) {
            params += 1;
            if params == 1 {
                out.push_str("{id}");
            } else {
                out.push_str(&format!("{{id{params}}}"));
            }
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn looks_like_id(seg: &str) -> bool {
    !seg.is_empty()
        && (seg.bytes().any(|b| b.is_ascii_digit())
            || seg.len() >= 24
            || seg.contains(|c: char| !c.is_ascii_alphanumeric() && !matches!(c, '-' | '_' | '.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_become_parameters() {
        assert_eq!(template_of("/orders/42"), "/orders/{id}");
        assert_eq!(template_of("/suppliers/sup-003"), "/suppliers/{id}");
        assert_eq!(
            template_of("/orders/42/lines/7"),
            "/orders/{id}/lines/{id2}"
        );
        assert_eq!(template_of("/inventory/validate"), "/inventory/validate");
        assert_eq!(template_of("/static/app.css"), "/static/app.css");
        assert_eq!(template_of("/"), "/");
        assert_eq!(template_of(""), "/");
        assert_eq!(
            template_of("/u/6f1c1d2e-9c3b-4a7e-8d4b-3f2a1b0c9d8e"),
            "/u/{id}"
        );
    }

    #[test]
    fn fields_asked_are_the_top_level_names() {
        let s = Sample {
            query: Some("a=1&fields=id,name,contacts.email".into()),
            ..Default::default()
        };
        assert_eq!(s.fields_asked(), vec!["id", "name", "contacts"]);
        assert!(Sample::default().fields_asked().is_empty());
    }
}
