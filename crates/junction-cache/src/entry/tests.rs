use super::*;
use crate::codec::DecodeError;
use http::HeaderValue;

fn entry(fresh: u64, swr: u64, sie: u64) -> CachedResponse {
    CachedResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("x-bin".into(), vec![0xff, 0]),
        ],
        body: Bytes::from_static(b"{\"id\":1}"),
        stored_at_ms: 1_000_000,
        fresh_for: Duration::from_millis(fresh),
        stale_while_revalidate: Duration::from_millis(swr),
        stale_if_error: Duration::from_millis(sie),
        etag: "\"abc\"".into(),
        ..CachedResponse::default()
    }
}

fn any() -> RequestDirectives {
    RequestDirectives::default()
}

#[test]
fn reuse_follows_the_timeline() {
    let e = entry(1_000, 500, 2_000);
    let at = |ms: u64| e.reuse(1_000_000 + ms, &any());
    assert_eq!(at(0), Reuse::Fresh);
    assert_eq!(at(999), Reuse::Fresh);
    assert_eq!(at(1_000), Reuse::Stale);
    assert_eq!(at(1_499), Reuse::Stale);
    assert_eq!(at(1_500), Reuse::StaleIfError);
    assert_eq!(at(2_999), Reuse::StaleIfError);
    assert_eq!(at(3_000), Reuse::Revalidate);
    // A clock that went backwards reads as resident time zero.
    assert_eq!(e.reuse(0, &any()), Reuse::Fresh);
    assert_eq!(
        e.remaining_retention(1_000_000 + 2_500),
        Some(Duration::from_millis(500))
    );
    assert_eq!(e.remaining_retention(1_000_000 + 3_000), None);
}

#[test]
fn initial_age_counts_and_revalidate_when_stale_forbids_stale() {
    let mut e = entry(1_000, 500, 2_000);
    e.initial_age = Duration::from_millis(900);
    assert_eq!(e.current_age(1_000_050), Duration::from_millis(950));
    assert_eq!(e.reuse(1_000_050, &any()), Reuse::Fresh);
    assert_eq!(e.reuse(1_000_100, &any()), Reuse::Stale);
    e.revalidate_when_stale = true;
    assert_eq!(e.reuse(1_000_100, &any()), Reuse::Revalidate);
}

#[test]
fn request_directives_narrow_reuse() {
    let e = entry(10_000, 0, 0);
    let at_5s = 1_000_000 + 5_000;
    let with = |f: fn(&mut RequestDirectives)| {
        let mut d = any();
        f(&mut d);
        e.reuse(at_5s, &d)
    };
    assert_eq!(with(|d| d.no_cache = true), Reuse::Revalidate);
    assert_eq!(with(|d| d.max_age = Some(4)), Reuse::Revalidate);
    assert_eq!(with(|d| d.max_age = Some(5)), Reuse::Fresh);
    assert_eq!(with(|d| d.min_fresh = Some(6)), Reuse::Revalidate);
    assert_eq!(with(|d| d.min_fresh = Some(4)), Reuse::Fresh);
    let stale_at = 1_000_000 + 12_000;
    let mut d = any();
    assert_eq!(e.reuse(stale_at, &d), Reuse::Revalidate);
    d.max_stale = Some(Some(3));
    assert_eq!(e.reuse(stale_at, &d), Reuse::Stale);
    d.max_stale = Some(Some(1));
    assert_eq!(e.reuse(stale_at, &d), Reuse::Revalidate);
    d.max_stale = Some(None);
    assert_eq!(e.reuse(stale_at, &d), Reuse::Stale);
}

#[test]
fn entries_with_validators_are_kept_for_revalidation() {
    let mut e = entry(1_000, 0, 0);
    assert_eq!(e.remaining_retention(1_000_000 + 1_000), None);
    e.headers.push(("etag".into(), b"\"v1\"".to_vec()));
    assert!(e.has_validator());
    assert!(e.remaining_retention(1_000_000 + 1_000).is_some());
    // Stale on arrival, still kept.
    e.initial_age = Duration::from_secs(7_200);
    assert!(e.remaining_retention(1_000_000).is_some());
}

#[test]
fn encode_decode_round_trips_and_body_is_zero_copy() {
    let mut e = entry(1_000, 500, 2_000);
    e.initial_age = Duration::from_millis(1234);
    e.shared_with_credentials = true;
    e.revalidate_when_stale = true;
    e.selecting = vec![("foo".into(), Some(b"1".to_vec())), ("bar".into(), None)];
    let encoded = e.encode();
    let decoded = CachedResponse::decode(encoded.clone()).expect("decodes");
    assert_eq!(decoded, e);
    let body_start = encoded.len() - e.body.len();
    assert_eq!(decoded.body.as_ptr(), encoded[body_start..].as_ptr());
}

#[test]
fn decode_reads_version_1_entries() {
    // A version-1 entry as the previous release wrote it.
    let mut v1 = b"JCE\x01".to_vec();
    v1.extend_from_slice(&200u16.to_be_bytes());
    for n in [5u64, 1_000, 0, 0] {
        v1.extend_from_slice(&n.to_be_bytes());
    }
    v1.extend_from_slice(&3u32.to_be_bytes());
    v1.extend_from_slice(b"\"e\"");
    v1.extend_from_slice(&0u32.to_be_bytes());
    v1.extend_from_slice(&2u64.to_be_bytes());
    v1.extend_from_slice(b"hi");
    let e = CachedResponse::decode(v1.into()).expect("decodes");
    assert_eq!(
        (e.status, e.stored_at_ms, &e.etag[..], &e.body[..]),
        (200, 5, "\"e\"", &b"hi"[..])
    );
    assert_eq!(e.fresh_for, Duration::from_secs(1));
}

#[test]
fn decode_rejects_damaged_input() {
    let encoded = entry(1, 1, 1).encode();
    for cut in [0, 3, 10, encoded.len() - 1] {
        assert_eq!(
            CachedResponse::decode(encoded.slice(..cut)),
            Err(DecodeError::BadLength),
            "cut at {cut}"
        );
    }
    let mut longer = encoded.to_vec();
    longer.push(0);
    assert_eq!(
        CachedResponse::decode(longer.into()),
        Err(DecodeError::BadLength)
    );
    let mut bad_magic = encoded.to_vec();
    bad_magic[0] = b'X';
    assert_eq!(
        CachedResponse::decode(bad_magic.into()),
        Err(DecodeError::BadMagic)
    );
    let mut bad_version = encoded.to_vec();
    bad_version[3] = 9;
    assert_eq!(
        CachedResponse::decode(bad_version.into()),
        Err(DecodeError::UnsupportedVersion(9))
    );
}

#[test]
fn etag_is_stable_and_body_dependent() {
    // Fixed expectation: proves the tag does not depend on process state.
    assert_eq!(etag_for(b""), "\"99aa06d3014798d86001c324468d497f\"");
    assert_eq!(etag_for(b"abc"), etag_for(b"abc"));
    assert_ne!(etag_for(b"abc"), etag_for(b"abd"));
}

#[test]
fn from_upstream_keeps_upstream_etag_and_age_and_drops_hop_by_hop() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "connection",
        HeaderValue::from_static("keep-alive, x-private"),
    );
    headers.insert("x-private", HeaderValue::from_static("1"));
    headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    headers.insert("set-cookie", HeaderValue::from_static("a=b"));
    headers.insert("age", HeaderValue::from_static("10"));
    let body = Bytes::from_static(b"hello");
    let keep = Storable {
        fresh_for: Duration::from_secs(1),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        initial_age: Duration::ZERO,
        shared_with_credentials: false,
        revalidate_when_stale: false,
    };
    let computed = CachedResponse::from_upstream(200, &headers, body.clone(), 5, &keep);
    assert_eq!(computed.etag, etag_for(b"hello"));
    let names: Vec<&str> = computed.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["content-type", "age"]);
    assert!(
        !computed.has_validator(),
        "a computed ETag is not the origin's"
    );

    headers.insert("etag", HeaderValue::from_static("W/\"v7\""));
    let given = CachedResponse::from_upstream(200, &headers, body, 5, &keep);
    assert_eq!(given.etag, "W/\"v7\"");
    assert!(given.has_validator());
}

#[test]
fn a_304_replaces_the_fields_it_carries() {
    let mut e = entry(1, 0, 0);
    e.headers
        .push(("cache-control".into(), b"max-age=1".to_vec()));
    e.headers.push(("x-a".into(), b"old".to_vec()));
    e.headers.push(("x-a".into(), b"old2".to_vec()));
    let mut update = HeaderMap::new();
    update.insert("cache-control", HeaderValue::from_static("max-age=60"));
    update.insert("x-a", HeaderValue::from_static("new"));
    update.insert("content-length", HeaderValue::from_static("0"));
    update.insert("x-new", HeaderValue::from_static("1"));
    let merged = e.headers_updated_by(&update);
    assert_eq!(merged["cache-control"], "max-age=60");
    assert_eq!(merged.get_all("x-a").iter().count(), 1);
    assert_eq!(merged["x-a"], "new");
    assert_eq!(merged["x-new"], "1");
    assert_eq!(merged["content-type"], "application/json");
    assert!(!merged.contains_key("content-length"));
}
