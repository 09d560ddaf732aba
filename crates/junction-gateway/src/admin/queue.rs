//! Messages and dead letters: look up a message's deliveries, list, replay
//! and purge the DLQ (which dead letters: [`super::dlq`]).

use super::dlq::{rfc3339, Filters};
use super::{problem, AdminState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use junction_queue::{DlqAction, QueueError};
use serde::Deserialize;
use serde_json::json;
use std::time::SystemTime;

/// Largest page of dead letters.
const MAX_PAGE: usize = 500;

pub(super) fn no_queue() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "no async routes are configured, so there is no queue",
    )
}

pub(super) fn queue_error(e: QueueError) -> Response {
    match e {
        QueueError::NotFound => problem(StatusCode::NOT_FOUND, "no such message or dead letter"),
        QueueError::Unsupported(why) => problem(StatusCode::NOT_IMPLEMENTED, why),
        other => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &crate::proxy::upstream::error_chain(&other),
        ),
    }
}

/// `GET /admin/messages/{id}`: each subscriber's delivery state and attempt history.
pub(super) async fn message(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(queue) = state.queue.as_ref() else {
        return no_queue();
    };
    match queue.ledger.message_status(&id).await {
        Ok(Some(status)) => match serde_json::to_value(&status) {
            Ok(mut v) => {
                with_rfc3339(&mut v);
                Json(v).into_response()
            }
            Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            &format!("message {id} is unknown (or its record expired)"),
        ),
        Err(e) => queue_error(e),
    }
}

/// Beside every unix-ms time (`…_at_ms`, `at_ms`) an RFC 3339 twin without
/// the `_ms` (`enqueued_at`, `at`), as the DLQ listing has; `null` stays `null`.
fn with_rfc3339(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let twins: Vec<(String, serde_json::Value)> = map
                .iter()
                .filter(|(k, _)| k.ends_with("at_ms"))
                .map(|(k, t)| {
                    let text = t.as_u64().map(rfc3339);
                    (k.trim_end_matches("_ms").to_owned(), json!(text))
                })
                .collect();
            for child in map.values_mut() {
                with_rfc3339(child);
            }
            map.extend(twins);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(with_rfc3339),
        _ => {}
    }
}

/// Query of `GET /admin/dlq` (the filters are [`Filters`]'s).
#[derive(Deserialize)]
pub(super) struct DlqQuery {
    topic: Option<String>,
    subscriber: Option<String>,
    reason: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/dlq?topic=&subscriber=&reason=&status=&since=&until=&after=&limit=`:
/// dead letters, oldest first, paginated.
pub(super) async fn dlq_list(
    State(state): State<AdminState>,
    Query(q): Query<DlqQuery>,
) -> Response {
    let Some(queue) = state.queue.as_ref() else {
        return no_queue();
    };
    let filters = Filters {
        topic: q.topic,
        subscriber: q.subscriber,
        reason: q.reason,
        status: q.status,
        since: q.since,
        until: q.until,
        ids: None,
    };
    let selection = match filters.select(SystemTime::now()) {
        Ok(s) => s,
        Err(why) => return problem(StatusCode::BAD_REQUEST, &why),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    match selection.page(queue.ledger.as_ref(), q.after, limit).await {
        Ok(page) => {
            let items: Vec<_> = page
                .items
                .iter()
                .map(|d| {
                    let mut history = json!(d.attempts);
                    with_rfc3339(&mut history);
                    json!({
                        "id": d.id,
                        "message_id": d.message.id.as_str(),
                        "topic": d.message.topic,
                        "subscriber": d.subscriber,
                        "attempts": d.attempts.len(),
                        "history": history,
                        "reason": d.reason,
                        "dead_at": rfc3339(d.dead_at_ms),
                        "dead_at_ms": d.dead_at_ms,
                        "enqueued_at": rfc3339(d.message.enqueued_at_ms),
                        "enqueued_at_ms": d.message.enqueued_at_ms,
                        "content_type": d.message.content_type,
                        "body_bytes": d.message.body.len(),
                    })
                })
                .collect();
            Json(json!({ "items": items, "next": page.next })).into_response()
        }
        Err(e) => queue_error(e),
    }
}

/// `POST /admin/dlq/{id}/replay`: the delivery is due again, attempts reset.
pub(super) async fn dlq_replay(state: State<AdminState>, id: Path<String>) -> Response {
    dlq_apply(state, id, DlqAction::Replay).await
}

/// `DELETE /admin/dlq/{id}`: the dead letter is discarded (its message's status
/// keeps the delivery dead).
pub(super) async fn dlq_purge(state: State<AdminState>, id: Path<String>) -> Response {
    dlq_apply(state, id, DlqAction::Purge).await
}

async fn dlq_apply(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    action: DlqAction,
) -> Response {
    let Some(queue) = state.queue.as_ref() else {
        return no_queue();
    };
    match queue.ledger.dlq_apply(&id, action).await {
        Ok(()) => match action {
            DlqAction::Replay => (
                StatusCode::ACCEPTED,
                Json(json!({ "id": id, "status": "replaying" })),
            )
                .into_response(),
            DlqAction::Purge => Json(json!({ "id": id, "status": "purged" })).into_response(),
        },
        Err(e) => queue_error(e),
    }
}

/// `POST /admin/dlq/replay` with an optional [`Filters`] body (`ids`, topic,
/// subscriber, reason, status, since, until): bulk replay of what matches.
pub(super) async fn dlq_replay_all(
    state: State<AdminState>,
    body: Option<Json<Filters>>,
) -> Response {
    dlq_apply_all(state, body, DlqAction::Replay).await
}

/// `POST /admin/dlq/purge`, as the replay: bulk purge of what matches.
pub(super) async fn dlq_purge_all(
    state: State<AdminState>,
    body: Option<Json<Filters>>,
) -> Response {
    dlq_apply_all(state, body, DlqAction::Purge).await
}

async fn dlq_apply_all(
    State(state): State<AdminState>,
    body: Option<Json<Filters>>,
    action: DlqAction,
) -> Response {
    let Some(queue) = state.queue.as_ref() else {
        return no_queue();
    };
    let filters = body.map(|Json(b)| b).unwrap_or_default();
    let selection = match filters.select(SystemTime::now()) {
        Ok(s) => s,
        Err(why) => return problem(StatusCode::BAD_REQUEST, &why),
    };
    match selection.apply(queue.ledger.as_ref(), action).await {
        Ok(n) => match action {
            DlqAction::Replay => {
                (StatusCode::ACCEPTED, Json(json!({ "replayed": n }))).into_response()
            }
            DlqAction::Purge => Json(json!({ "purged": n })).into_response(),
        },
        Err(e) => queue_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_ms_times_get_rfc3339_twins() {
        let mut v = json!({
            "enqueued_at_ms": 1_700_000_000_123u64,
            "completed_at_ms": null,
            "duration_ms": 5,
            "subscribers": [{"history": [{"at_ms": 1_700_000_000_000u64}],
                             "state": {"state": "pending", "next_attempt_at_ms": 1_700_000_001_000u64}}]
        });
        with_rfc3339(&mut v);
        assert_eq!(v["enqueued_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["completed_at"], serde_json::Value::Null);
        assert!(v.get("duration").is_none());
        assert_eq!(
            v["subscribers"][0]["history"][0]["at"],
            "2023-11-14T22:13:20.000Z"
        );
        assert_eq!(
            v["subscribers"][0]["state"]["next_attempt_at"],
            "2023-11-14T22:13:21.000Z"
        );
    }
}
