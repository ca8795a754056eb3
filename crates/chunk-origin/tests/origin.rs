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

#[tokio::test]
async fn validators_if_range_and_refused_heads() {
    use chunk_origin::Validators;
    use reqwest::header::{ETAG, IF_RANGE, LAST_MODIFIED};
    let origin = Origin::start().unwrap();
    let body = content(3, 1000);
    origin.insert("f", body.clone());
    let client = reqwest::Client::new();

    let head = client.head(origin.url("f")).send().await.unwrap();
    let tag = head.headers()[ETAG].to_str().unwrap().to_string();
    assert!(tag.starts_with('"'), "{tag}");
    let matching = client
        .get(origin.url("f"))
        .header(RANGE, "bytes=10-")
        .header(IF_RANGE, &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(matching.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(matching.bytes().await.unwrap(), body.slice(10..));
    let other = client
        .get(origin.url("f"))
        .header(RANGE, "bytes=10-")
        .header(IF_RANGE, "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "a mismatched If-Range gets the whole"
    );
    assert_eq!(other.bytes().await.unwrap(), body);

    origin.set_validators("f", Validators::WeakEtag);
    let weak = client.get(origin.url("f")).send().await.unwrap();
    let weak_tag = weak.headers()[ETAG].to_str().unwrap().to_string();
    assert!(weak_tag.starts_with("W/"), "{weak_tag}");
    let resumed = client
        .get(origin.url("f"))
        .header(RANGE, "bytes=10-")
        .header(IF_RANGE, &weak_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resumed.status(),
        StatusCode::OK,
        "a weak ETag never matches"
    );

    origin.set_validators("f", Validators::LastModified);
    let dated = client.head(origin.url("f")).send().await.unwrap();
    assert!(dated.headers().get(ETAG).is_none());
    assert!(dated.headers().get(LAST_MODIFIED).is_some());
    origin.set_validators("f", Validators::None);
    let bare = client.head(origin.url("f")).send().await.unwrap();
    assert!(bare.headers().get(ETAG).is_none() && bare.headers().get(LAST_MODIFIED).is_none());

    origin.refuse_head("f", Some(405));
    let refused = client.head(origin.url("f")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    let get = client.get(origin.url("f")).send().await.unwrap();
    assert_eq!(get.bytes().await.unwrap(), body, "GET still works");
    origin.refuse_head("f", None);
    let head = client.head(origin.url("f")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
}

#[tokio::test]
async fn redirects_carry_the_given_location() {
    let origin = Origin::start().unwrap();
    origin.insert("f", content(1, 10));
    origin.push_fault(
        "f",
        Fault::Redirect {
            status: 307,
            location: "http://127.0.0.1:9/x?sig=1".into(),
        },
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = client.get(origin.url("f")).send().await.unwrap();
    assert_eq!(moved.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(moved.headers()["location"], "http://127.0.0.1:9/x?sig=1");
}
