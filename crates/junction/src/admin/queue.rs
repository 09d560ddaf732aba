//! Messages and dead letters: look up a message's deliveries, list and replay the DLQ.

use super::{problem, AdminState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use junction_queue::{DlqFilter, QueueError};
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
        other => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &crate::proxy::upstream::error_chain(&other),
        ),
    }
}

/// `GET /admin/messages/{id}`: each subscriber's delivery state and attempt history.
pub(super) async fn message(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(broker) = state.broker.as_ref() else {
        return no_queue();
    };
    match broker.message_status(&id).await {
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
    let Some(broker) = state.broker.as_ref() else {
        return no_queue();
    };
    let filter = DlqFilter {
        topic: q.topic,
        subscriber: q.subscriber,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    match broker.dlq_list(filter, q.after, limit).await {
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
pub(super) async fn dlq_replay(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Response {
    let Some(broker) = state.broker.as_ref() else {
        return no_queue();
    };
    match broker.dlq_replay(&id).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "status": "replaying" })),
        )
            .into_response(),
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
    State(state): State<AdminState>,
    body: Option<Json<ReplayAll>>,
) -> Response {
    let Some(broker) = state.broker.as_ref() else {
        return no_queue();
    };
    let f = body.map(|Json(b)| b).unwrap_or_default();
    match broker
        .dlq_replay_all(DlqFilter {
            topic: f.topic,
            subscriber: f.subscriber,
        })
        .await
    {
        Ok(n) => (StatusCode::ACCEPTED, Json(json!({ "replayed": n }))).into_response(),
        Err(e) => queue_error(e),
    }
}
