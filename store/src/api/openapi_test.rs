//! The OpenAPI document against the router: it parses, documents every
//! route the router serves with exactly the methods it serves, and every
//! answer a probe gets is one the document lists for that operation.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::Value;

use super::api_test::Harness;
use super::error::ErrorCode;
use super::openapi::document;

/// The paths of every `.route("...", ...)` in the API's source files, with
/// `{*key}` written as OpenAPI writes it, `{key}`. Routes under `/debug/`
/// exist only in builds with the `failpoints` feature and are not part of
/// the API.
fn served_paths() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("read src/api") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".rs") || name.ends_with("_test.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("read source");
        for (at, _) in source.match_indices(".route(") {
            let rest = source[at + ".route(".len()..].trim_start();
            let literal = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(p, _)| p)
                .unwrap_or_else(|| panic!("{name}: a route whose path is not a literal"));
            if !literal.starts_with("/debug/") {
                paths.insert(literal.replace("{*key}", "{key}"));
            }
        }
    }
    assert!(paths.len() > 10, "found only {paths:?}");
    paths
}

const METHODS: [Method; 5] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::PATCH,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_route_the_router_serves() {
    let doc: Value = serde_json::from_str(document()).expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        served_paths(),
        documented,
        "the router's routes (left) and the document's paths (right) differ"
    );

    let h = Harness::start(|_| {}).await;
    for (path, item) in paths {
        let concrete = path
            .replace("{key}", "openapi-probe")
            .replace("{id}", "0")
            .replace("{name}", "openapi-probe");
        // An unknown query parameter: every handler that reads its query
        // refuses it before doing anything; the others ignore it, and a
        // body-less POST is refused for its body.
        let uri = format!("{concrete}?openapi_probe=1");
        for method in METHODS {
            let reply = h.call(method.clone(), &uri, Body::empty()).await;
            let op = &item[method.as_str().to_lowercase()];
            if op.is_null() {
                assert_eq!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
                continue;
            }
            assert_ne!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served"
            );
            let status = reply.status.as_u16().to_string();
            assert!(
                op["responses"][&status].is_object(),
                "{method} {uri} answered {status}, which its operation does not list: {:?}",
                reply.body
            );
        }
    }
    h.shutdown().await;
}

#[test]
fn every_error_code_is_documented() {
    let doc = document();
    assert!(doc.contains("\"ErrorBody\""));
    for code in ErrorCode::ALL {
        // Unknown routes and methods are not operations of the document.
        if matches!(code, ErrorCode::NotFound | ErrorCode::MethodNotAllowed) {
            continue;
        }
        assert!(
            doc.contains(&format!("`{}`", code.as_str())),
            "no response of the document names `{}`",
            code.as_str()
        );
    }
}

#[test]
fn the_api_docs_point_to_the_document() {
    let api_md = include_str!("../../../docs/api.md");
    assert!(api_md.contains("/openapi.json"));
}
