//! The dashboard: one self-contained web page served at `GET /` on the admin port.
//!
//! Why: operators should see routes, breakers, cache, queues, dead letters and
//! the dependency graph live, without installing anything. The page is HTML,
//! CSS and vanilla JS embedded at compile time (no CDN, no build step); it polls
//! the admin API every second and draws the dependency graph itself as SVG.
//!
//! # Serving it
//! `GET /` answers [`index_html`] with `content-type: text/html; charset=utf-8`
//! and **without** requiring the admin token (the page holds no data). The
//! page's script is inline: a `Content-Security-Policy`, if any, must allow
//! `script-src 'unsafe-inline'` and `style-src 'unsafe-inline'`.
//!
//! # Authentication
//! Every API call carries `Authorization: Bearer <token>` when the page has a
//! token: from `?token=` in its URL (then kept in `localStorage` under
//! `junction.admin.token` and removed from the address bar), or typed into the
//! sign-in prompt the page shows when an endpoint answers 401.
//!
//! # The admin API the page reads (the gateway implements these shapes)
//! Numbers are JSON numbers; rates and quantiles are over the rolling window
//! of [`crate::stats`] (0 when the window saw no calls); `*_total` and counters
//! are since start.
//!
//! `GET /admin/overview` →
//! ```json
//! {
//!   "uptime_s": 3725,
//!   "routes": [
//!     { "name": "product", "kind": "sync", "rps": 41.2, "p50_ms": 3.2, "p99_ms": 48.7,
//!       "error_ratio": 0.0, "count_total": 120345 }
//!   ],
//!   "upstreams": [
//!     { "name": "payment", "state": "open", "error_ratio": 0.62, "calls_in_window": 40,
//!       "next_probe_in_ms": 4200, "in_flight": 0, "max_concurrency": 64,
//!       "rps": 0.0, "p99_ms": 3000.0 }
//!   ],
//!   "cache": { "hits": 9000, "misses": 1000, "hit_ratio": 0.9, "entries": 420,
//!              "bytes": 1572864, "bytes_saved": 48234496 },
//!   "queues": [
//!     { "topic": "orders", "depth": 12, "dlq_depth": 3, "oldest_pending_age_ms": 1500 }
//!   ],
//!   "subscribers": [
//!     { "name": "fulfillment", "topic": "orders", "state": "delivering",
//!       "delivered": 8990, "retrying": 2, "dead": 3, "p99_ms": 120.0 }
//!   ]
//! }
//! ```
//! - `routes[].kind`: `"sync"` or `"async"`.
//! - `upstreams[].state`: `"closed"`, `"open"` or `"half-open"`; `error_ratio` and
//!   `calls_in_window` are the breaker's own window; `next_probe_in_ms` is `null`
//!   unless the breaker is open; `in_flight` / `max_concurrency` are the bulkhead.
//! - `cache`: `null` when no route caches. `bytes_saved`: response bytes served
//!   from cache instead of fetched upstream.
//! - `queues[].oldest_pending_age_ms`: age of the oldest undelivered message
//!   (delivery lag), `null` when nothing is pending; `queues` is `[]` without
//!   async routes, as is `subscribers`.
//! - `subscribers[]`: `delivered` and `dead` are counts since start; `retrying`
//!   is deliveries currently waiting for another attempt; `state` says why it
//!   is not delivering: `delivering`, `paused` (its upstream's breaker is
//!   open), `disabled` (failing past `disable_after`) or `rate_limited`.
//!
//! `GET /admin/dependencies` → [`crate::graph::GraphSnapshot`] serialized:
//! ```json
//! { "window_s": 30,
//!   "nodes": [ { "id": "caller:web", "kind": "caller", "label": "web" } ],
//!   "edges": [ { "from": "caller:web", "to": "route:product", "kind": "sync",
//!                "rate_per_sec": 12.5, "p50_ms": 3.1, "p95_ms": 20.0, "p99_ms": 45.2,
//!                "error_ratio": 0.02, "retry_ratio": 0.0, "calls": 1200, "errors": 24,
//!                "retries": 0, "on_slowest_path": true } ],
//!   "slowest_path": ["caller:web", "route:product", "upstream:inventory"],
//!   "slowest_path_p99_ms": 90.4,
//!   "dropped_samples": 0 }
//! ```
//! `nodes[].kind` is one of `caller`, `route`, `topic`, `upstream`, `subscriber`;
//! `edges[].kind` is `sync` or `async`.
//!
//! `GET /admin/dlq?limit=50&topic=&subscriber=&status=&reason=&since=` (the
//! filter form's non-empty fields) →
//! ```json
//! { "items": [ { "id": "dl-1", "message_id": "01J…", "topic": "orders",
//!                "subscriber": "fulfillment", "attempts": 5,
//!                "reason": "HTTP 503 from fulfillment", "dead_at_ms": 1760000000000 } ],
//!   "next": null }
//! ```
//! `dead_at_ms` is Unix time in milliseconds; `next` is a cursor for `?after=`
//! or `null`. Extra fields are ignored. A 404 (no queue configured) shows as
//! "no dead-letter queue".
//!
//! `POST /admin/dlq/{id}/replay` → `202` (or `200`) with a JSON body, e.g.
//! `{ "id": "dl-1", "status": "replaying" }`; the row leaves the list.
//! `DELETE /admin/dlq/{id}` → `200` `{ "id": "dl-1", "status": "purged" }`.
//! `POST /admin/dlq/replay` and `POST /admin/dlq/purge` with the filters as
//! the body (plus `ids` when rows are checked) → `202` `{ "replayed": n }` /
//! `200` `{ "purged": n }`.
//! Errors are `application/problem+json` whose `detail` the page shows.
//!
//! # Stable hooks for browser tests
//! `#status` (live status text, `data-state` = `live|connecting|offline|unauthorized`),
//! `#routes` and `#upstreams` (tables), `[data-route="NAME"]`,
//! `[data-upstream="NAME"] .state` (breaker state text), `#queues`, `#subscribers`,
//! `#cache`, `#dlq` (table), `[data-dlq-id="ID"] button.replay` / `button.purge`,
//! `#replay-all`, `#purge-all`, `#dlq-filters` (inputs named like the query),
//! `#graph svg` with `[data-node="ID"]` and `[data-edge="FROM->TO"]`; clicking
//! a route, upstream or subscriber row opens `#drill` (`.d-calls`, `.d-latency`,
//! `.d-hist` charts, `.d-status tr[data-status="CODE"]`); `#recs` lists the
//! recommendations, `[data-rec="KIND TARGET"]`; `#msg-search` (input `#msg-id`)
//! shows a message in `#messages .msg-page`, one `.msg-sub[data-subscriber]`
//! per subscriber with `.msg-state` and `.msg-history` rows.

/// The page: HTML with its CSS and script inlined.
const PAGE: &str = concat!(
    include_str!("dashboard/head.html"),
    "<style>\n",
    include_str!("dashboard/style.css"),
    "</style>\n</head>\n",
    include_str!("dashboard/body.html"),
    "<script>\n\"use strict\";\n",
    include_str!("dashboard/graph.js"),
    include_str!("dashboard/drill.js"),
    include_str!("dashboard/messages.js"),
    include_str!("dashboard/recs.js"),
    include_str!("dashboard/app.js"),
    "</script>\n</body>\n</html>\n",
);

/// The whole dashboard page, ready to serve as `text/html; charset=utf-8`.
pub fn index_html() -> &'static str {
    PAGE
}

/// The content type to serve [`index_html`] with.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_one_self_contained_document() {
        let page = index_html();
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert_eq!(
            page.matches("<script").count(),
            1,
            "one inline script, no external ones"
        );
        assert_eq!(
            page.matches("</script>").count(),
            1,
            "no script text closes the tag early"
        );
        for external in ["src=\"http", "href=\"http", "@import", "//cdn", "url(http"] {
            assert!(!page.contains(external), "no external resource: {external}");
        }
    }

    #[test]
    fn page_has_the_documented_hooks_and_endpoints() {
        let page = index_html();
        for hook in [
            "id=\"status\"",
            "id=\"routes\"",
            "id=\"upstreams\"",
            "id=\"queues\"",
            "id=\"subscribers\"",
            "id=\"cache\"",
            "id=\"dlq\"",
            "id=\"graph\"",
            "id=\"replay-all\"",
            "id=\"purge-all\"",
            "id=\"dlq-filters\"",
            "data-upstream",
            "data-dlq-id",
            "btn replay",
        ] {
            assert!(page.contains(hook), "page has {hook}");
        }
        for endpoint in [
            "admin/overview",
            "admin/dependencies",
            "admin/dlq?",
            "admin/dlq/${action}",
            "junction.admin.token",
        ] {
            assert!(page.contains(endpoint), "page uses {endpoint}");
        }
    }
}
