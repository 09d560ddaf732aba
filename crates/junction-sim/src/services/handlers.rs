//! The request handlers of the simulated services.
//!
//! Every handler first lets the service "behave" (outage, latency, injected
//! failure) and then answers with a JSON body padded to the service's payload
//! size; fulfillment and analytics also record the order ids they accepted.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{Receipt, Reject, ServiceState, Shared};
use crate::scenario::{OutageMode, ServiceKind};

pub(super) fn router(kind: ServiceKind) -> Router<Shared> {
    match kind {
        ServiceKind::Order => Router::new()
            .route("/orders", post(order_create))
            .route("/orders/{id}", get(order_get)),
        ServiceKind::Inventory => Router::new()
            .route("/inventory/{sku}", get(inventory_get))
            .route("/inventory/validate", post(inventory_validate)),
        ServiceKind::Supplier => Router::new().route("/suppliers/{id}", get(supplier_get)),
        ServiceKind::Fulfillment => Router::new().route("/orders", post(receipt_post)),
        ServiceKind::Analytics => Router::new().route("/events", post(receipt_post)),
        ServiceKind::Payment => Router::new().route("/charge", post(payment_charge)),
        ServiceKind::Notification => Router::new().route("/notify", post(notify)),
    }
}

impl ServiceState {
    /// Applies outage, latency and injected failure; `Err` is the response to send.
    async fn behave(&self) -> Result<(), Reject> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(resp) = self.outage_response().await {
            return Err(Box::new(resp));
        }
        let (delay, fail, status) = {
            let mut rng = self.rng.lock();
            let delay = self.latency.sample(&mut *rng);
            let fail = rng.gen_bool(self.failure_rate);
            let status = if rng.gen_bool(0.5) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (delay, fail, status)
        };
        tokio::time::sleep(delay).await;
        // An outage that began while the request was in flight fails it too.
        if let Some(resp) = self.outage_response().await {
            return Err(Box::new(resp));
        }
        if fail {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(self.problem(status, "injected failure")));
        }
        Ok(())
    }

    async fn outage_response(&self) -> Option<Response> {
        let (mode, left) = self.clock.outage(self.kind)?;
        self.failures.fetch_add(1, Ordering::Relaxed);
        if mode == OutageMode::Hang {
            tokio::time::sleep(left).await;
        }
        Some(self.problem(StatusCode::SERVICE_UNAVAILABLE, "outage"))
    }

    fn problem(&self, status: StatusCode, detail: &str) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": format!("{} service: {detail}", self.kind),
        });
        self.send(status, serde_json::to_vec(&body).unwrap_or_default())
    }

    fn send(&self, status: StatusCode, body: Vec<u8>) -> Response {
        self.bytes_sent
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    /// Sends `fields`, padded with filler attributes up to the payload size.
    fn send_padded(&self, status: StatusCode, fields: Map<String, Value>) -> Response {
        self.send(status, padded(fields, self.payload_bytes))
    }

    fn json_body(&self, body: &Bytes) -> Result<Map<String, Value>, Reject> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Box::new(
                self.problem(StatusCode::BAD_REQUEST, "body must be a JSON object"),
            )),
        }
    }
}

/// Serializes `fields` plus `attr_NNN` filler strings until it is about `target` bytes.
pub(crate) fn padded(mut fields: Map<String, Value>, target: usize) -> Vec<u8> {
    const CHUNK: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod";
    let mut len = serde_json::to_vec(&fields).map(|v| v.len()).unwrap_or(0);
    let mut i = 0usize;
    while len < target && i < 100_000 {
        let key = format!("attr_{i:03}");
        let room = target - len;
        // `,"attr_000":""` costs key + 6 bytes of punctuation.
        let overhead = key.len() + 6;
        let take = CHUNK.len().min(room.saturating_sub(overhead));
        len += overhead + take;
        fields.insert(key, Value::String(CHUNK[..take].to_string()));
        i += 1;
    }
    serde_json::to_vec(&fields).unwrap_or_default()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A stable number in `0..modulo` from a key (FNV-1a).
fn stable(key: &str, modulo: u64) -> u64 {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    h % modulo.max(1)
}

async fn order_create(State(st): State<Shared>, body: Bytes) -> Response {
    let req = match st.json_body(&body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if let Err(r) = st.behave().await {
        return *r;
    }
    let id = req.get("orderId").cloned().unwrap_or(json!("ord-new"));
    st.send_padded(
        StatusCode::CREATED,
        obj(json!({"orderId": id, "status": "received"})),
    )
}

async fn order_get(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    if let Err(r) = st.behave().await {
        return *r;
    }
    let lines = 1 + stable(&id, 5);
    st.send_padded(
        StatusCode::OK,
        obj(json!({"orderId": id, "status": "open", "lines": lines})),
    )
}

fn stock(sku: &str) -> Map<String, Value> {
    obj(json!({
        "sku": sku,
        "available": 20 + stable(sku, 480),
        "reserved": stable(sku, 17),
        "warehouse": format!("wh-{}", stable(sku, 4) + 1),
    }))
}

async fn inventory_get(State(st): State<Shared>, Path(sku): Path<String>) -> Response {
    if let Err(r) = st.behave().await {
        return *r;
    }
    st.send_padded(StatusCode::OK, stock(&sku))
}

async fn inventory_validate(State(st): State<Shared>, body: Bytes) -> Response {
    let req = match st.json_body(&body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if let Err(r) = st.behave().await {
        return *r;
    }
    let sku = req.get("sku").and_then(Value::as_str).unwrap_or("unknown");
    let qty = req.get("quantity").and_then(Value::as_u64).unwrap_or(1);
    let mut m = stock(sku);
    let available = m.get("available").and_then(Value::as_u64).unwrap_or(0);
    m.insert("quantity".into(), json!(qty));
    m.insert("valid".into(), json!(qty <= available));
    st.send_padded(StatusCode::OK, m)
}

async fn supplier_get(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    if let Err(r) = st.behave().await {
        return *r;
    }
    let country = ["DE", "US", "CN", "MX", "PL"][stable(&id, 5) as usize];
    let m = obj(json!({
        "id": id,
        "name": format!("Supplier {id}"),
        "lead_time_days": 2 + stable(&id, 12),
        "country": country,
        "currency": "EUR",
        "payment_terms": "net-30",
        "rating": 3.0 + stable(&id, 20) as f64 / 10.0,
        "certifications": ["ISO-9001", "ISO-14001"],
        "contacts": [{"role": "sales", "email": format!("sales@{id}.example")}],
    }));
    st.send_padded(StatusCode::OK, m)
}

/// Fulfillment `POST /orders` and analytics `POST /events`: record the order id.
async fn receipt_post(State(st): State<Shared>, body: Bytes) -> Response {
    let req = match st.json_body(&body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let Some(order_id) = req
        .get("orderId")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return st.problem(StatusCode::BAD_REQUEST, "missing string field orderId");
    };
    if let Err(r) = st.behave().await {
        return *r;
    }
    st.receipts
        .lock()
        .entry(order_id.clone())
        .or_insert(Receipt {
            count: 0,
            first: Instant::now(),
        })
        .count += 1;
    let (status, word) = match st.kind {
        ServiceKind::Analytics => (StatusCode::ACCEPTED, "recorded"),
        _ => (StatusCode::CREATED, "scheduled"),
    };
    st.send_padded(status, obj(json!({"orderId": order_id, "status": word})))
}

async fn payment_charge(State(st): State<Shared>, body: Bytes) -> Response {
    let req = match st.json_body(&body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if let Err(r) = st.behave().await {
        return *r;
    }
    let amount = req.get("amount").cloned().unwrap_or(json!(0));
    let n = st.calls.load(Ordering::Relaxed);
    st.send_padded(
        StatusCode::OK,
        obj(json!({"chargeId": format!("ch-{n}"), "amount": amount, "status": "captured"})),
    )
}

async fn notify(State(st): State<Shared>, body: Bytes) -> Response {
    if let Err(r) = st.json_body(&body) {
        return *r;
    }
    if let Err(r) = st.behave().await {
        return *r;
    }
    st.send_padded(StatusCode::ACCEPTED, obj(json!({"status": "queued"})))
}
