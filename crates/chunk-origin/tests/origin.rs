//! The origin's HTTP behaviour, which the manager's fault tests rely on.
#![allow(clippy::unwrap_used)]

use chunk_origin::{Fault, Origin, content};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};

#[tokio::test]
async fn serves_files_heads_and_ranges() {
    let origin = Origin::start().unwrap();
    let body = content(7, 10_000);
    origin.insert("a/b", body.clone());
    let client = reqwest::Client::new();

    let head = client.head(origin.url("a/b")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[CONTENT_LENGTH], "10000");

    let part = client
        .get(origin.url("a/b"))
        .header(RANGE, "bytes=4000-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()[CONTENT_RANGE], "bytes 4000-9999/10000");
    assert_eq!(part.bytes().await.unwrap(), body.slice(4000..));

    let beyond = client
        .get(origin.url("a/b"))
        .header(RANGE, "bytes=10000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let missing = client.get(origin.url("nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    assert_eq!(origin.get_count("a/b"), 2);
    assert_eq!(origin.requests("a/b").len(), 3);
}

#[tokio::test]
async fn faults_apply_once_in_order_and_persistent_faults_stay() {
    let origin = Origin::start().unwrap();
    let body = content(1, 5000);
    origin.insert("f", body.clone());
    origin.push_fault("f", Fault::Truncate { after: 100 });
    origin.push_fault("f", Fault::Status(500));
    let client = reqwest::Client::new();

    let cut = client.get(origin.url("f")).send().await.unwrap();
    assert_eq!(cut.status(), StatusCode::OK);
    assert!(cut.bytes().await.is_err(), "a truncated body is an error");
    let error = client.get(origin.url("f")).send().await.unwrap();
    assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let fine = client.get(origin.url("f")).send().await.unwrap();
    assert_eq!(fine.bytes().await.unwrap(), body);

    origin.set_fault("f", Some(Fault::IgnoreRange));
    for _ in 0..2 {
        let whole = client
            .get(origin.url("f"))
            .header(RANGE, "bytes=10-")
            .send()
            .await
            .unwrap();
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.bytes().await.unwrap(), body);
    }
    origin.set_fault("f", None);
    let part = client
        .get(origin.url("f"))
        .header(RANGE, "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
}

#[tokio::test]
async fn a_reset_is_an_error_for_the_client() {
    let origin = Origin::start().unwrap();
    origin.insert("r", content(2, 100_000));
    origin.push_fault("r", Fault::Reset { after: 1000 });
    let response = reqwest::get(origin.url("r")).await.unwrap();
    assert!(response.bytes().await.is_err());
}
