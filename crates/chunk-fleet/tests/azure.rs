//! The cluster store on `az://` against Azurite, Azure's blob storage emulator (npm; installed
//! into the target directory if `azurite-blob` is not on the PATH, and the test fails if it
//! cannot be), and `gs://` URLs opened from options.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chunk_fleet::placement::{ChunkSize, Params, WorkerCapacity, place};
use chunk_fleet::store::{Assignment, ClusterStore, Member, State, StoreError};
use chunk_origin::azurite::{ACCOUNT, ACCOUNT_KEY, Azurite};
use chunk_origin::{Fault, Origin};

fn sample_assignment() -> Assignment {
    let chunks: Vec<ChunkSize> = (0..20u8)
        .map(|i| ChunkSize {
            id: [i; 32],
            bytes: 10,
        })
        .collect();
    let workers = [
        WorkerCapacity::new("a", 1_000),
        WorkerCapacity::new("b", 1_000),
    ];
    let placement = place(&chunks, &workers, Params::default()).expect("valid");
    Assignment::from_placement(&placement, "catalog")
}

#[tokio::test]
async fn issue12_the_cluster_store_round_trips_on_az() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("azurite");
    let azurite = Azurite::start(&dir)
        .unwrap_or_else(|error| panic!("the az:// tests need Azurite: {error}"));
    azurite.create_container("cluster").unwrap();
    let options = [
        ("azure_storage_account_name", ACCOUNT.to_string()),
        ("azure_storage_account_key", ACCOUNT_KEY.to_string()),
        ("azure_storage_endpoint", azurite.endpoint()),
        ("azure_allow_http", "true".to_string()),
    ];
    let store = ClusterStore::open_with_options("az://cluster/fleet-a", options.clone()).unwrap();
    let other = ClusterStore::open_with_options("az://cluster/fleet-a", options).unwrap();

    assert!(store.read_state().await.unwrap().is_none());
    let member = Member::new("worker-a", "http://127.0.0.1:8001", 1 << 30, 1_000);
    store.put_member(&member).await.unwrap();
    let members = store.list_members().await.unwrap();
    assert_eq!(members.members, vec![member]);

    let id = store
        .put_assignment(&sample_assignment(), 1_000)
        .await
        .unwrap();
    let state = |generation, workers: Vec<String>| {
        State::new(generation, id.clone(), 5_000, workers, 4_000)
    };
    store
        .write_state(&state(1, vec!["a".into()]))
        .await
        .unwrap();
    // A second writer of generation 1 loses: create-only puts work on Azure.
    let lost = other.write_state(&state(1, vec!["b".into()])).await;
    assert!(
        matches!(lost, Err(StoreError::Conflict { generation: 1, .. })),
        "{lost:?}"
    );
    let read = other.read_state().await.unwrap().expect("a state");
    assert_eq!(read, state(1, vec!["a".into()]));
    assert_eq!(
        other.read_assignment(&read.assignment).await.unwrap(),
        sample_assignment()
    );
    let sha = store.put_catalog(b"[1, 2, 3]").await.unwrap();
    assert_eq!(other.read_catalog(&sha).await.unwrap(), b"[1, 2, 3]");
}

#[tokio::test]
async fn issue12_gs_stores_open_from_options_and_a_refusal_is_an_error_not_an_empty_state() {
    // No GCS emulator is reachable: the in-process origin stands in, refusing the state.
    // object_store sends the object name percent-encoded whole.
    let origin = Origin::start().unwrap();
    origin.insert("bucket/fleet%2Fstate%2Ejson", "{}".into());
    origin.set_fault("bucket/fleet%2Fstate%2Ejson", Some(Fault::Status(403)));
    let key = serde_json::json!({
        "private_key": "generated-not-a-key",
        "private_key_id": "id",
        "client_email": "test@example.invalid",
        "disable_oauth": true,
    })
    .to_string();
    let store = ClusterStore::open_with_options(
        "gs://bucket/fleet",
        [
            ("google_service_account_key", key),
            ("google_base_url", format!("http://{}", origin.addr())),
            ("allow_http", "true".to_string()),
        ],
    )
    .unwrap();
    let error = store.read_state().await.unwrap_err();
    assert!(error.to_string().contains("state.json"), "{error}");
    assert!(
        !error.to_string().contains("generated-not-a-key"),
        "{error}"
    );

    // Without a bucket, or with an unknown Azure form, the URL is refused clearly.
    for url in ["gs://", "az://a.b/x"] {
        let error = ClusterStore::open(url).expect_err(url);
        assert!(
            matches!(error, StoreError::InvalidUrl { .. }),
            "{url}: {error}"
        );
    }
}
