//! Field projection on a ~100 KB JSON body down to three fields: the streaming
//! `project_json_bytes` against parse-then-`apply`. Target: well under 1 ms.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use junction_cache::{project_json_bytes, FieldSet};
use serde_json::{json, Value};

/// A product listing of about 100 KB: metadata plus many items with nested data.
fn body() -> Vec<u8> {
    let items: Vec<Value> = (0..285)
        .map(|i| {
            json!({
                "id": i,
                "sku": format!("SKU-{i:06}"),
                "name": format!("Product number {i} with a reasonably long name"),
                "description": "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.",
                "price": { "amount": 1999 + i, "currency": "EUR" },
                "stock": { "warehouse": "north", "available": i % 17, "reserved": i % 5 },
                "tags": ["a", "b", "c"],
                "supplier": { "id": i % 13, "name": "Acme Supplies", "country": "DE" }
            })
        })
        .collect();
    let doc = json!({ "page": 1, "total": items.len(), "generated": "2026-01-01T00:00:00Z", "items": items });
    let bytes = serde_json::to_vec(&doc).expect("serializable");
    assert!(
        (100_000..120_000).contains(&bytes.len()),
        "body is {} bytes",
        bytes.len()
    );
    bytes
}

fn projection(c: &mut Criterion) {
    let body = body();
    let fields = FieldSet::parse("total,items.id,items.price.amount").expect("valid fields");
    let mut group = c.benchmark_group("projection");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("project_json_bytes", |b| {
        b.iter(|| project_json_bytes(black_box(&body), &fields).expect("valid json"))
    });
    group.bench_function("parse_then_apply", |b| {
        b.iter(|| {
            let doc: Value = serde_json::from_slice(black_box(&body)).expect("valid json");
            serde_json::to_vec(&fields.apply(&doc)).expect("serializable")
        })
    });
    group.finish();
}

criterion_group!(benches, projection);
criterion_main!(benches);
