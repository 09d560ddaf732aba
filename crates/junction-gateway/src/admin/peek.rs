//! `GET /admin/dlq/{id}/payload`: a bounded look at a dead letter's payload,
//! with secrets masked.
//!
//! `admin.payload_peek` decides what a reader may see: nothing (`off`),
//! payloads with the values of named fields masked (`redacted`, the default),
//! or, on request (`?redact=false`), the payload as stored (`full`). A field
//! is masked when its name, letters and digits only and lowercase, is or ends
//! with a configured name so written (`cardNumber`, `card-number` and
//! `billing_card_number` all match `card_number`). Masking works on JSON (any
//! depth; the masked document is re-serialized, pretty and with keys sorted)
//! and on URL-encoded forms (the rest kept as sent). A payload that looks like
//! JSON or says it is a form but does not parse is withheld rather than shown
//! unmasked (`masking: "withheld"`); any other payload is shown as it is and
//! says that nothing was masked. At most `max_bytes` are returned (`?bytes=`
//! asks for fewer); bytes that are not UTF-8 come base64-encoded.

use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{problem, AdminState};
use crate::config::{PayloadPeekConfig, PeekMode};

/// What a masked value reads as.
const MASK: &str = "[redacted]";

/// Query of `GET /admin/dlq/{id}/payload`.
#[derive(Deserialize)]
pub(super) struct PeekQuery {
    /// Most bytes wanted (at most `admin.payload_peek.max_bytes`).
    bytes: Option<u64>,
    /// `false` for the payload unmasked (`mode: full` only).
    redact: Option<bool>,
}

pub(super) async fn dlq_payload(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<PeekQuery>,
) -> Response {
    let cfg = &state.payload_peek;
    let redact = q.redact.unwrap_or(true);
    match cfg.mode {
        PeekMode::Off => {
            return problem(
                StatusCode::FORBIDDEN,
                "payloads are not shown here (admin.payload_peek.mode: off)",
            )
        }
        PeekMode::Redacted if !redact => {
            return problem(
                StatusCode::FORBIDDEN,
                "unmasked payloads need admin.payload_peek.mode: full",
            )
        }
        _ => {}
    }
    let Some(queue) = state.queue.as_ref() else {
        return super::queue::no_queue();
    };
    let letter = match queue.ledger.dead_letter(&id).await {
        Ok(Some(letter)) => letter,
        Ok(None) => return problem(StatusCode::NOT_FOUND, "no such dead letter"),
        Err(e) => return super::queue::queue_error(e),
    };
    let limit = q
        .bytes
        .unwrap_or(cfg.max_bytes.0)
        .min(cfg.max_bytes.0)
        .max(1);
    let content_type = letter.message.content_type.as_deref();
    let view = Peek::of(
        &letter.message.body,
        content_type,
        redact.then(|| fields(cfg)).as_ref(),
        limit as usize,
    );
    Json(json!({
        "id": letter.id,
        "message_id": letter.message.id.as_str(),
        "content_type": content_type,
        "body_bytes": letter.message.body.len(),
        "masking": view.masking,
        "masked_fields": view.masked,
        "encoding": view.encoding,
        "payload": view.payload,
        "truncated": view.truncated,
    }))
    .into_response()
}

/// The configured field names, normalized.
fn fields(cfg: &PayloadPeekConfig) -> HashSet<String> {
    cfg.redact.iter().map(|f| normalize(f)).collect()
}

/// `Card-Number`, `cardNumber` and `card_number` name the same field.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether a field called `name` is one to mask.
fn secret(fields: &HashSet<String>, name: &str) -> bool {
    let name = normalize(name);
    fields
        .iter()
        .any(|f| !f.is_empty() && name.ends_with(f.as_str()))
}

/// What a read shows of one payload.
#[derive(Debug, PartialEq)]
struct Peek {
    /// `json`, `form`, `withheld` (looked maskable but did not parse: not
    /// shown), `none` (nothing recognisable to mask) or `off` (not asked).
    masking: &'static str,
    /// How many values were masked.
    masked: usize,
    /// `text` or `base64`.
    encoding: &'static str,
    payload: String,
    /// Whether bytes past the limit were left out.
    truncated: bool,
}

impl Peek {
    fn of(
        body: &[u8],
        content_type: Option<&str>,
        redact: Option<&HashSet<String>>,
        limit: usize,
    ) -> Self {
        let (masking, masked, shown): (_, _, std::borrow::Cow<[u8]>) = match redact {
            None => ("off", 0, body.into()),
            Some(fields) => mask(body, content_type, fields),
        };
        let truncated = shown.len() > limit;
        let mut cut = &shown[..shown.len().min(limit)];
        match std::str::from_utf8(cut) {
            Ok(text) => Self::text(masking, masked, text, truncated),
            // Cut inside a character: drop its first bytes.
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
                cut = &cut[..e.valid_up_to()];
                let text = std::str::from_utf8(cut).expect("valid prefix");
                Self::text(masking, masked, text, true)
            }
            Err(_) => Self {
                masking,
                masked,
                encoding: "base64",
                payload: base64::engine::general_purpose::STANDARD.encode(cut),
                truncated,
            },
        }
    }

    fn text(masking: &'static str, masked: usize, text: &str, truncated: bool) -> Self {
        Self {
            masking,
            masked,
            encoding: "text",
            payload: text.to_owned(),
            truncated,
        }
    }
}

/// The payload with the named fields masked, how, and how many.
fn mask<'a>(
    body: &'a [u8],
    content_type: Option<&str>,
    fields: &HashSet<String>,
) -> (&'static str, usize, std::borrow::Cow<'a, [u8]>) {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if let Ok(mut doc) = serde_json::from_slice::<Value>(body) {
        let masked = mask_json(&mut doc, fields);
        let text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        return ("json", masked, text.into());
    }
    let starts = body.iter().find(|b| !b.is_ascii_whitespace());
    let json_like = ct.contains("json") || matches!(starts, Some(b'{' | b'['));
    let form = ct.starts_with("application/x-www-form-urlencoded");
    if form {
        if let Ok(text) = std::str::from_utf8(body) {
            let mut masked = 0;
            let pairs: Vec<String> = text
                .split('&')
                .map(|pair| {
                    let (key, _) = pair.split_once('=').unwrap_or((pair, ""));
                    let name: String = form_urlencoded::parse(key.as_bytes())
                        .next()
                        .map(|(k, _)| k.into_owned())
                        .unwrap_or_default();
                    if secret(fields, &name) {
                        masked += 1;
                        format!("{key}={MASK}")
                    } else {
                        pair.to_owned()
                    }
                })
                .collect();
            return ("form", masked, pairs.join("&").into_bytes().into());
        }
    }
    if json_like || form {
        // Secrets may be in it and cannot be found: show nothing.
        return ("withheld", 0, std::borrow::Cow::Borrowed(&[]));
    }
    ("none", 0, body.into())
}

/// Masks every value under a named key, at any depth; returns how many.
fn mask_json(v: &mut Value, fields: &HashSet<String>) -> usize {
    match v {
        Value::Object(map) => map
            .iter_mut()
            .map(|(k, v)| {
                if secret(fields, k) {
                    *v = Value::String(MASK.into());
                    1
                } else {
                    mask_json(v, fields)
                }
            })
            .sum(),
        Value::Array(items) => items.iter_mut().map(|v| mask_json(v, fields)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> HashSet<String> {
        fields(&PayloadPeekConfig::default())
    }

    #[test]
    fn json_fields_are_masked_at_any_depth() {
        let body = br#"{"order":"o-1","payment":{"Card-Number":"4111","amount":5},"items":[{"token":"t"}]}"#;
        let p = Peek::of(body, Some("application/json"), Some(&secrets()), 4096);
        assert_eq!((p.masking, p.masked, p.encoding), ("json", 2, "text"));
        assert!(!p.payload.contains("4111") && !p.payload.contains("\"t\""));
        assert!(p.payload.contains("\"amount\": 5") && p.payload.contains(MASK));
        assert!(!p.truncated);
    }

    #[test]
    fn spellings_and_prefixed_names_of_a_secret_are_masked() {
        let body = br#"{"cardNumber":"1","card-number":"2","billing_card_number":"3","clientSecret":"4","x-api-key":"5","tokens_left":6}"#;
        let p = Peek::of(body, Some("application/json"), Some(&secrets()), 4096);
        assert_eq!(p.masked, 5, "{}", p.payload);
        assert!(p.payload.contains("\"tokens_left\": 6"), "{}", p.payload);
    }

    #[test]
    fn what_looks_maskable_but_does_not_parse_is_withheld() {
        for (body, ct) in [
            (&b"{\"password\": \"x\", broken"[..], None),
            (
                &b"{\"a\":1}\n{\"password\":\"x\"}"[..],
                Some("application/x-ndjson"),
            ),
            (
                &b"\xef\xbb\xbf{\"password\":\"x\"}"[..],
                Some("application/json"),
            ),
        ] {
            let p = Peek::of(body, ct, Some(&secrets()), 4096);
            assert_eq!(
                (p.masking, p.payload.as_str()),
                ("withheld", ""),
                "{body:?}"
            );
        }
    }

    #[test]
    fn forms_keep_their_other_fields_as_sent() {
        let body = b"user=ann&password=hunter2&note=a+b%21";
        let p = Peek::of(
            body,
            Some("application/x-www-form-urlencoded"),
            Some(&secrets()),
            4096,
        );
        assert_eq!(p.payload, "user=ann&password=[redacted]&note=a+b%21");
        assert_eq!((p.masking, p.masked), ("form", 1));
    }

    #[test]
    fn other_payloads_say_nothing_was_masked_and_unmasked_reads_are_exact() {
        let p = Peek::of(
            b"<card>4111</card>",
            Some("text/xml"),
            Some(&secrets()),
            4096,
        );
        assert_eq!(
            (p.masking, p.payload.as_str()),
            ("none", "<card>4111</card>")
        );
        let body = br#"{"password":"x"}"#;
        let p = Peek::of(body, Some("application/json"), None, 4096);
        assert_eq!((p.masking, p.payload.as_bytes()), ("off", &body[..]));
    }

    #[test]
    fn reads_are_bounded_and_binary_comes_base64() {
        let body = "é".repeat(100); // 200 bytes
        let p = Peek::of(body.as_bytes(), None, None, 5);
        assert_eq!((p.payload.as_str(), p.truncated), ("éé", true));
        let p = Peek::of(&[0xff, 0x00, 0x01, 0x02], None, None, 3);
        assert_eq!(
            (p.encoding, p.payload.as_str(), p.truncated),
            ("base64", "/wAB", true)
        );
    }
}
