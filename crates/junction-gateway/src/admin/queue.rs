//! Messages and dead letters: look up a message's deliveries, list, replay and purge the DLQ.

use super::{problem, AdminState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use junction_queue::{DlqAction, DlqFilter, QueueError};
use serde::Deserialize;
use serde_json::json;

/// Largest page of dead letters.
const MAX_PAGE: usize = 500;

fn no_queue() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "no async routes are configured, so there is no queue",
    )
}

fn queue_error(e: QueueError) -> Response {
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
        Ok(Some(status)) => Json(status).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            &format!("message {id} is unknown (or its record expired)"),
        ),
        Err(e) => queue_error(e),
    }
}

/// Query of `GET /admin/dlq`.
#[derive(Deserialize)]
pub(super) struct DlqQuery {
    topic: Option<String>,
    subscriber: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/dlq?topic=&subscriber=&after=&limit=`: dead letters, oldest first, paginated.
pub(super) async fn dlq_list(
    State(state): State<AdminState>,
    Query(q): Query<DlqQuery>,
) -> Response {
    let Some(queue) = state.queue.as_ref() else {
        return no_queue();
    };
    let filter = DlqFilter {
        topic: q.topic,
        subscriber: q.subscriber,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    match queue.ledger.dlq_list(filter, q.after, limit).await {
        Ok(page) => {
            let items: Vec<_> = page
                .items
                .iter()
                .map(|d| {
                    json!({
                        "id": d.id,
                        "message_id": d.message.id.as_str(),
                        "topic": d.message.topic,
                        "subscriber": d.subscriber,
                        "attempts": d.attempts.len(),
                        "history": d.attempts,
                        "reason": d.reason,
                        "dead_at_ms": d.dead_at_ms,
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

/// Body of `POST /admin/dlq/replay` (all fields optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayAll {
    topic: Option<String>,
    subscriber: Option<String>,
}

/// `POST /admin/dlq/replay` with `{"topic"?, "subscriber"?}`: bulk replay.
pub(super) async fn dlq_replay_all(
    state: State<AdminState>,
    body: Option<Json<ReplayAll>>,
) -> Response {
    dlq_apply_all(state, body, DlqAction::Replay).await
}

/// `POST /admin/dlq/purge` with `{"topic"?, "subscriber"?}`: bulk purge.
pub(super) async fn dlq_purge_all(
    state: State<AdminState>,
    body: Option<Json<ReplayAll>>,
) -> Response {
    dlq_apply_all(state, body, DlqAction::Purge).await
}

async fn dlq_apply_all(
    State(state): State<AdminState>,
    body: Option<Json<ReplayAll>>,
    action: DlqAction,
) -> Response {
    let Some(queue) = state.queue.as_ref() else {
        return no_queue();
    };
    let f = body.map(|Json(b)| b).unwrap_or_default();
    let filter = DlqFilter {
        topic: f.topic,
        subscriber: f.subscriber,
    };
    match queue.ledger.dlq_apply_all(filter, action).await {
        Ok(n) => match action {
            DlqAction::Replay => {
                (StatusCode::ACCEPTED, Json(json!({ "replayed": n }))).into_response()
            }
            DlqAction::Purge => Json(json!({ "purged": n })).into_response(),
        },
        Err(e) => queue_error(e),
    }
}
