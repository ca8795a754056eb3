//! Queries through the public API against an in-process origin serving generated Parquet
//! chunks: results equal DataFusion's directly over the same files, only the covering chunks
//! are downloaded (counted at the origin), concurrent queries share downloads, a chunk deleted
//! while a query reads it goes after the query, and cached chunks are evicted least recently
//! used, never an assigned or pinned one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::single_range_in_vec_init
)]

mod common;

use std::time::Duration;

use chunk_manager::{ChunkState, Event};
use chunk_origin::{Fault, Gate};
use chunk_query::synth::FILE_NAMES;
use chunk_query::{Catalog, QueryConfig, QueryError};
use common::{DATASET, Fixture, Worker, pretty};
use futures::StreamExt;

/// Six chunks of 50 blocks: 0..300.
fn six() -> Fixture {
    Fixture::new(&[0..50, 50..100, 100..150, 150..200, 200..250, 250..300])
}

const QUERIES: [&str; 6] = [
    "SELECT count(*) AS blocks, min(block_number) AS first, max(block_number) AS last FROM blocks",
    "SELECT block_number, hash, gas_used, transaction_count FROM blocks ORDER BY block_number",
    "SELECT \"to\", count(*) AS calls, sum(gas) AS gas FROM transactions \
     WHERE \"to\" IS NOT NULL GROUP BY \"to\" ORDER BY calls DESC, \"to\" LIMIT 5",
    "SELECT topic0, count(*) AS n FROM logs GROUP BY topic0 ORDER BY n DESC, topic0",
    "SELECT t.block_number, t.transaction_index, count(l.log_index) AS logs \
     FROM transactions t LEFT JOIN logs l \
     ON t.block_number = l.block_number AND t.transaction_index = l.transaction_index \
     GROUP BY t.block_number, t.transaction_index \
     ORDER BY t.block_number, t.transaction_index",
    "SELECT b.block_number, b.transaction_count, count(t.hash) AS counted \
     FROM blocks b LEFT JOIN transactions t ON b.block_number = t.block_number \
     GROUP BY b.block_number, b.transaction_count HAVING count(t.hash) <> b.transaction_count",
];

/// Widened sums (issue 11) under HAVING, ORDER BY, arithmetic and windows: the same numbers.
const SUMS: [&str; 4] = [
    "SELECT \"to\", sum(gas) AS gas, sum(value) AS paid FROM transactions \
     WHERE \"to\" IS NOT NULL GROUP BY \"to\" \
     HAVING sum(gas) > 100000 AND sum(value) >= 0 ORDER BY gas DESC, \"to\" LIMIT 5",
    "SELECT sum(gas) + 1 AS more, sum(value) / 2 AS half, avg(gas) AS mean FROM transactions",
    "SELECT block_number, transaction_index, \
     sum(gas) OVER (ORDER BY block_number, transaction_index) AS running, \
     sum(value) OVER (PARTITION BY block_number) AS block_value \
     FROM transactions ORDER BY block_number, transaction_index LIMIT 20",
    "SELECT count(*) AS n FROM (SELECT block_number, sum(gas) AS g FROM transactions \
     GROUP BY block_number) WHERE g > (SELECT avg(gas) FROM transactions)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_equal_datafusion_over_the_same_files() {
    let fixture = six();
    let worker = Worker::new(fixture.catalog());
    for blocks in [75..210, 0..300, 120..121] {
        for sql in QUERIES {
            let expected = fixture.reference(&blocks, sql).await;
            let actual = worker.run(blocks.clone(), sql).await;
            assert_eq!(actual, expected, "blocks {blocks:?}: {sql}");
        }
    }
    for sql in SUMS {
        let expected = fixture.reference(&(0..300), sql).await;
        let actual = worker.run(0..300, sql).await;
        assert_eq!(actual, expected, "{sql}");
    }
    // No block's transactions fail to add up.
    let consistency = worker
        .run(
            0..300,
            &format!("SELECT count(*) AS bad FROM ({})", QUERIES[5]),
        )
        .await;
    assert!(consistency.contains("| 0   |"), "{consistency}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_covering_chunks_are_downloaded() {
    let fixture = six();
    let worker = Worker::whole(fixture.catalog());
    let stream = worker
        .engine
        .query(&DATASET, 75..160, "SELECT count(*) FROM transactions")
        .await
        .unwrap();
    let used: Vec<_> = stream
        .used_chunks()
        .iter()
        .map(|chunk| (chunk.blocks.clone(), chunk.fetched))
        .collect();
    assert_eq!(used, [(75..100, true), (100..150, true), (150..160, true)]);
    stream.collect().await.unwrap();
    let files = FILE_NAMES.len();
    assert_eq!(fixture.all_gets(), [0, files, files, files, 0, 0]);

    // Warm: the same range and a narrower one download nothing more.
    worker.run(75..160, "SELECT count(*) FROM logs").await;
    let stream = worker
        .engine
        .query(&DATASET, 100..110, "SELECT count(*) FROM blocks")
        .await
        .unwrap();
    assert!(stream.used_chunks().iter().all(|chunk| !chunk.fetched));
    drop(stream);
    assert_eq!(fixture.all_gets(), [0, files, files, files, 0, 0]);

    // The chunks fetched for queries are cached, not assigned.
    let status = worker.manager.status(&fixture.chunks[1].id).unwrap();
    assert!(status.cached && !status.wanted);
    assert_eq!(worker.manager.totals().cached, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_share_one_download_per_chunk() {
    let fixture = six();
    let worker = Worker::whole(fixture.catalog());
    // Hold the first chunk's blocks file until both queries are waiting for it.
    let gate = Gate::new();
    let held = fixture.chunks[2].path("blocks.parquet");
    fixture.origin.push_fault(
        &held,
        Fault::Stall {
            after: 0,
            gate: gate.clone(),
        },
    );
    let sql = "SELECT count(*) AS n FROM blocks";
    let (first, second, ()) = tokio::join!(
        worker.run(100..200, sql),
        worker.run(120..180, sql),
        // Polled after both queries registered their fetches.
        async { gate.open() }
    );
    assert_eq!(first, fixture.reference(&(100..200), sql).await);
    assert_eq!(second, fixture.reference(&(120..180), sql).await);
    assert_eq!(fixture.origin.get_count(&held), 1, "one download, shared");
    let files = FILE_NAMES.len();
    assert_eq!(fixture.all_gets(), [0, 0, files, files, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_deleted_while_a_query_reads_it_goes_after_the_query() {
    let fixture = six();
    // Small batches, one partition: the query yields many batches, reading as it goes.
    let query = QueryConfig::default()
        .with_batch_size(16)
        .with_target_partitions(1)
        .with_remote_reads(false);
    let worker = Worker::with(fixture.catalog(), |config| config, query);
    // One chunk assigned (downloaded in the background), one fetched by the query.
    worker.assign(&fixture.descriptions[1]).await;

    let blocks = 60..140;
    // No ORDER BY: the scan streams, reading the second chunk's file after the delete.
    let sql = "SELECT block_number, transaction_index, hash FROM transactions";
    let mut stream = worker
        .engine
        .query(&DATASET, blocks.clone(), sql)
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let ids: Vec<_> = stream
        .used_chunks()
        .iter()
        .map(|chunk| chunk.chunk)
        .collect();
    assert_eq!(ids, [fixture.chunks[1].id, fixture.chunks[2].id]);
    let dirs: Vec<_> = stream
        .pinned()
        .iter()
        .map(|chunk| chunk.path().to_path_buf())
        .collect();

    for id in &ids {
        worker.manager.delete_chunk(*id);
    }
    assert!(
        worker.manager.find_chunk(DATASET, 70).is_none(),
        "hidden at once"
    );
    assert!(
        worker.manager.find_chunk(DATASET, 120).is_none(),
        "hidden at once"
    );
    worker.manager.wait_idle().await;
    for dir in &dirs {
        assert!(dir.exists(), "kept while the query runs: {}", dir.display());
    }
    for id in &ids {
        let state = worker.manager.status(id).unwrap().state;
        assert!(
            matches!(state, ChunkState::Deleting { pinned: true }),
            "{state:?}"
        );
    }

    let mut batches = vec![first];
    while let Some(batch) = stream.next().await {
        batches.push(batch.unwrap());
    }
    assert_eq!(
        sorted_lines(&pretty(&batches)),
        sorted_lines(&fixture.reference(&blocks, sql).await)
    );

    drop(stream);
    worker.manager.wait_idle().await;
    for dir in &dirs {
        assert!(!dir.exists(), "removed after the query: {}", dir.display());
    }
    for id in &ids {
        assert!(worker.manager.status(id).is_none());
    }
    assert!(worker.chunk_dirs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_chunks_are_evicted_least_recently_used_never_assigned_or_pinned() {
    let fixture = six();
    let largest = fixture
        .chunks
        .iter()
        .map(|chunk| chunk.size())
        .max()
        .unwrap();
    let smallest = fixture
        .chunks
        .iter()
        .map(|chunk| chunk.size())
        .min()
        .unwrap();
    assert!(4 * smallest > 3 * largest, "a fourth chunk never fits");
    // Room for three chunks.
    let worker = Worker::with(
        fixture.catalog(),
        |config| config.with_disk_budget(3 * largest),
        QueryConfig::default().with_remote_reads(false),
    );
    let mut events = worker.manager.subscribe();
    // Chunk 0 assigned; 1 and 2 cached by queries, 1 used last.
    worker.assign(&fixture.descriptions[0]).await;
    let sql = "SELECT count(*) FROM blocks";
    worker.run(110..120, sql).await;
    worker.run(60..70, sql).await;
    // Chunk 1 pinned by a running query.
    let pinned = worker.engine.query(&DATASET, 50..60, sql).await.unwrap();

    // Chunk 3 needs room: 2 is evicted (1 is pinned and more recent, 0 is assigned).
    let answer = worker.run(160..170, sql).await;
    assert_eq!(answer, fixture.reference(&(160..170), sql).await);
    worker.manager.wait_idle().await;
    assert_eq!(evicted_of(&mut events), [fixture.chunks[2].id]);
    assert!(worker.manager.status(&fixture.chunks[2].id).is_none());
    assert!(
        worker.manager.get_chunk(&fixture.chunks[0].id).is_some(),
        "assigned: kept"
    );
    assert!(
        worker.manager.get_chunk(&fixture.chunks[1].id).is_some(),
        "pinned: kept"
    );
    drop(pinned);

    // Chunk 4 needs room: now 1 is the least recently used cached chunk.
    worker.run(210..220, sql).await;
    worker.manager.wait_idle().await;
    assert_eq!(evicted_of(&mut events), [fixture.chunks[1].id]);
    let totals = worker.manager.totals();
    assert!(totals.bytes_committed <= totals.disk_budget);
    assert_eq!(totals.ready, 3);
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

fn evicted_of(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<[u8; 32]> {
    let mut evicted = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Evicted { chunk, .. } = event {
            evicted.push(chunk);
        }
    }
    evicted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_chunks_answer_each_block_once() {
    // 0..100 re-chunked as 0..40 and 40..100, plus an overlapping 80..160.
    let fixture = Fixture::new(&[0..100, 0..40, 40..100, 80..160]);
    let worker = Worker::new(fixture.catalog());
    let answer = worker
        .run(
            20..150,
            "SELECT count(*) AS n, count(DISTINCT block_number) AS distinct_blocks FROM blocks",
        )
        .await;
    assert!(answer.contains("| 130 | 130             |"), "{answer}");
    // The transactions of the range, as generated, without any file.
    let generated = fixture
        .synth
        .tables(20..150)
        .unwrap()
        .transactions
        .num_rows();
    let counted = worker
        .engine
        .query(&DATASET, 20..150, "SELECT count(*) AS n FROM transactions")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let counted = pretty(&counted);
    assert!(
        counted.contains(&format!("| {generated} ")),
        "{counted} vs {generated}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_told_apart_from_failures() {
    let fixture = Fixture::new(&[0..50, 50..100]);
    fixture.origin.set_fault(
        &fixture.chunks[1].path("logs.parquet"),
        Some(Fault::Status(404)),
    );
    let worker = Worker::whole(fixture.catalog());
    let error = |result: Result<_, QueryError>| result.expect_err("an error");

    let e = error(worker.engine.query(&DATASET, 10..20, "SELEC 1").await);
    assert!(
        matches!(e, QueryError::Sql { .. }) && e.is_bad_request(),
        "{e}"
    );
    for statement in [
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
        "DROP TABLE blocks",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let e = error(worker.engine.query(&DATASET, 10..20, statement).await);
        assert!(matches!(e, QueryError::Sql { .. }), "{statement}: {e}");
    }
    assert_eq!(fixture.all_gets(), [0, 0], "refused before any download");
    // A column that does not exist is known from the catalog's schemas, before any download.
    let e = error(
        worker
            .engine
            .query(&DATASET, 10..20, "SELECT nope FROM blocks")
            .await,
    );
    assert!(matches!(e, QueryError::Sql { .. }), "{e}");
    let e = error(worker.engine.query(&DATASET, 20..20, "SELECT 1").await);
    assert!(matches!(e, QueryError::EmptyRange { .. }), "{e}");
    let e = error(worker.engine.query(&[1; 32], 0..10, "SELECT 1").await);
    assert!(matches!(e, QueryError::UnknownDataset { .. }), "{e}");
    let e = error(worker.engine.query(&DATASET, 500..600, "SELECT 1").await);
    assert!(matches!(e, QueryError::NoChunks { .. }), "{e}");

    let e = error(
        worker
            .engine
            .query(&DATASET, 40..60, "SELECT count(*) FROM blocks")
            .await,
    );
    assert!(
        matches!(&e, QueryError::Fetch { chunk, .. } if *chunk == fixture.chunks[1].id),
        "{e}"
    );
    assert!(!e.is_bad_request());
    assert!(e.to_string().contains("404"), "{e}");
    // The failure did not disturb the other chunk, which a later query uses at once.
    worker.run(0..50, "SELECT count(*) FROM blocks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_range_is_reported_and_absent_from_the_result() {
    let fixture = Fixture::new(&[0..50, 100..150]);
    let worker = Worker::new(fixture.catalog());
    let stream = worker
        .engine
        .query(&DATASET, 25..125, "SELECT count(*) AS n FROM blocks")
        .await
        .unwrap();
    assert_eq!(stream.missing(), [50..100]);
    let answer = pretty(&stream.collect().await.unwrap());
    assert!(answer.contains("| 50 |"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_listed_from_object_storage_matches_the_descriptions() {
    let fixture = six();
    let root = tempfile::tempdir().unwrap();
    for chunk in &fixture.chunks {
        chunk.write_to(root.path()).unwrap();
    }
    let url = format!("file://{}", root.path().display());
    let base = fixture.origin.url("");
    let listed = Catalog::list_url(&url, DATASET, Some(base.trim_end_matches('/')))
        .await
        .unwrap();
    let described = fixture.catalog();
    assert_eq!(listed.len(), described.len());
    for chunk in described.chunks(&DATASET) {
        assert_eq!(listed.get(chunk.id()).map(|c| &**c), Some(&**chunk));
    }
    // And it answers queries like the described one.
    let worker = Worker::new(listed);
    let sql = "SELECT count(*) FROM logs";
    assert_eq!(
        worker.run(30..130, sql).await,
        fixture.reference(&(30..130), sql).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_waiting_too_long_for_its_chunks_times_out() {
    let fixture = Fixture::new(&[0..50]);
    let gate = Gate::new();
    fixture.origin.push_fault(
        &fixture.chunks[0].path("blocks.parquet"),
        Fault::Stall {
            after: 0,
            gate: gate.clone(),
        },
    );
    let query = QueryConfig::default()
        .with_fetch_timeout(Some(Duration::from_millis(200)))
        .with_remote_reads(false);
    let worker = Worker::with(fixture.catalog(), |config| config, query);
    let result = worker
        .engine
        .query(&DATASET, 0..50, "SELECT count(*) FROM blocks")
        .await;
    assert!(
        matches!(result, Err(QueryError::FetchTimeout { .. })),
        "{result:?}"
    );
    gate.open();
}

/// The exact sum of `gas * gas_price` over the generated transactions of `blocks`.
fn fees(fixture: &Fixture, blocks: std::ops::Range<u64>) -> u128 {
    use chunk_query::arrow::array::AsArray;
    use chunk_query::arrow::datatypes::{Decimal128Type, UInt64Type};
    let transactions = fixture.synth.tables(blocks).unwrap().transactions;
    let gas = transactions
        .column_by_name("gas")
        .unwrap()
        .as_primitive::<UInt64Type>();
    let price = transactions
        .column_by_name("gas_price")
        .unwrap()
        .as_primitive::<Decimal128Type>();
    gas.iter()
        .zip(price.iter())
        .map(|(gas, price)| u128::from(gas.unwrap()) * u128::try_from(price.unwrap()).unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_sums_are_exact_and_overflow_is_an_error() {
    let fixture = six();
    let worker = Worker::new(fixture.catalog());
    let expected = fees(&fixture, 0..300);
    // The sum does not fit 64 bits: a UInt64 sum wraps.
    let wrapped = 10 * expected;
    assert!(wrapped > u128::from(u64::MAX), "{wrapped}");

    // Amounts are decimals, like real chain data: exact.
    let answer = worker
        .run(
            0..300,
            "SELECT sum(gas * gas_price) AS fees FROM transactions",
        )
        .await;
    assert!(answer.contains(&format!("| {expected} |")), "{answer}");
    // 64-bit integers: the product is checked and the sum is widened to a decimal.
    let answer = worker
        .run(
            0..300,
            "SELECT sum(gas * CAST(gas_price AS BIGINT UNSIGNED) * CAST(10 AS BIGINT UNSIGNED)) \
             AS fees, sum(gas) AS gas FROM transactions",
        )
        .await;
    assert!(answer.contains(&format!("| {wrapped} |")), "{answer}");

    // What does not fit is an error naming the expression, never a wrapped value.
    for sql in [
        "SELECT CAST(18446744073709551615 AS BIGINT UNSIGNED) + CAST(1 AS BIGINT UNSIGNED)",
        "SELECT gas * CAST(gas_price AS BIGINT UNSIGNED) * CAST(1000000000 AS BIGINT UNSIGNED) \
         FROM transactions",
    ] {
        let failure = match worker.engine.query(&DATASET, 0..300, sql).await {
            Ok(stream) => stream.collect().await.expect_err(sql),
            Err(failure) => failure,
        };
        let message = failure.to_string();
        assert!(message.contains("integer overflow in"), "{sql}: {message}");
        assert!(message.contains("Overflow"), "{sql}: {message}");
    }
    // Decimal sums that do not fit 38 digits fail too.
    let failure = match worker
        .engine
        .query(
            &DATASET,
            0..300,
            "SELECT sum(CAST(99999999999999999999999999999999999999 AS DECIMAL(38, 0))) \
             FROM transactions",
        )
        .await
    {
        Ok(stream) => stream.collect().await.expect_err("a decimal overflow"),
        Err(failure) => failure,
    };
    assert!(
        failure.to_string().contains("Decimal128(38, 0)"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_query_that_cannot_plan_downloads_nothing() {
    let fixture = six();
    let worker = Worker::new(fixture.catalog());
    for sql in [
        "SELECT no_such_column FROM blocks",
        "SELECT count(*) FROM no_such_table",
        "SELECT hash + 1 FROM blocks WHERE timestamp > 'not a time'",
    ] {
        let failure = worker
            .engine
            .query(&DATASET, 0..300, sql)
            .await
            .expect_err(sql);
        assert!(
            matches!(failure, QueryError::Sql { .. }),
            "{sql}: {failure}"
        );
    }
    assert_eq!(fixture.all_gets(), [0; 6], "nothing downloaded");
    assert!(worker.manager.list_chunks().is_empty());

    // Without schemas in the catalog: only the footers of the first covering chunk's files
    // are read, with range requests; nothing is downloaded.
    let worker = Worker::new(fixture.catalog_without_schemas());
    let failure = worker
        .engine
        .query(&DATASET, 60..300, "SELECT no_such_column FROM blocks")
        .await
        .expect_err("no such column");
    assert!(matches!(failure, QueryError::Sql { .. }), "{failure}");
    let gets = fixture.all_gets();
    assert_eq!(
        gets,
        [0, 3, 0, 0, 0, 0],
        "one range read per file of one chunk"
    );
    for name in FILE_NAMES {
        let path = fixture.chunks[1].path(name);
        for request in fixture.origin.requests(&path) {
            if request.method == "GET" {
                assert!(
                    request.range.is_some() && request.status == 206,
                    "{path}: {request:?}"
                );
            }
        }
    }
    assert!(
        worker.manager.list_chunks().is_empty(),
        "nothing downloaded"
    );
    let schemas = worker.engine.table_schemas(&DATASET).await.unwrap();
    assert_eq!(schemas["blocks"], chunk_query::synth::blocks_schema());
    assert_eq!(
        schemas["transactions"],
        chunk_query::synth::transactions_schema()
    );
}

/// Every request for the files of `table`, over all chunks, and the body bytes they got.
fn table_traffic(fixture: &Fixture, table: &str) -> (usize, u64) {
    let mut requests = 0;
    let mut bytes = 0;
    for chunk in &fixture.chunks {
        let path = chunk.path(&format!("{table}.parquet"));
        for request in fixture.origin.requests(&path) {
            requests += 1;
            bytes += fixture.served_bytes(&path, &request);
        }
    }
    (requests, bytes)
}

/// The size of every chunk's file of `table`.
fn table_size(fixture: &Fixture, table: &str) -> u64 {
    let name = format!("{table}.parquet");
    fixture
        .chunks
        .iter()
        .map(|chunk| file_size(chunk, &name))
        .sum()
}

fn file_size(chunk: &chunk_query::synth::SynthChunk, name: &str) -> u64 {
    chunk
        .files
        .iter()
        .find(|(file, _)| file == name)
        .map_or(0, |(_, bytes)| bytes.len() as u64)
}

/// Requests for each chunk's blocks file.
fn blocks_requests(fixture: &Fixture) -> Vec<usize> {
    fixture
        .chunks
        .iter()
        .map(|chunk| fixture.origin.requests(&chunk.path("blocks.parquet")).len())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_cold_blocks_query_reads_only_the_blocks_bytes_it_needs() {
    let fixture = six();
    let worker = Worker::new(fixture.catalog());
    let sql = "SELECT count(*) AS n, max(gas_used) AS most FROM blocks";
    let stream = worker.engine.query(&DATASET, 0..300, sql).await.unwrap();
    assert!(
        stream
            .used_chunks()
            .iter()
            .all(|chunk| chunk.remote && !chunk.fetched),
        "{:?}",
        stream.used_chunks()
    );
    assert!(stream.pinned().is_empty(), "remote chunks need no pin");
    let answer = pretty(&stream.collect().await.unwrap());
    assert_eq!(answer, fixture.reference(&(0..300), sql).await);

    // Nothing downloaded; not one request for the files of the tables the query does not read.
    assert!(worker.manager.list_chunks().is_empty());
    assert!(worker.chunk_dirs().is_empty());
    assert_eq!(table_traffic(&fixture, "transactions"), (0, 0));
    assert_eq!(table_traffic(&fixture, "logs"), (0, 0));
    // Of the blocks files, only footers and the two columns: a fraction of their size.
    let (requests, bytes) = table_traffic(&fixture, "blocks");
    let size = table_size(&fixture, "blocks");
    assert!(requests > 0);
    assert!(bytes < size, "{bytes} bytes of {size}");
    for chunk in &fixture.chunks {
        for request in fixture.origin.requests(&chunk.path("blocks.parquet")) {
            assert!(
                request.method == "HEAD" || (request.range.is_some() && request.status == 206),
                "{request:?}"
            );
        }
    }

    // A sub-range touches only its chunks.
    let requests_before = blocks_requests(&fixture);
    let before: Vec<_> = FILE_NAMES
        .iter()
        .map(|name| table_traffic(&fixture, name.trim_end_matches(".parquet")))
        .collect();
    let sql = "SELECT sum(gas_used) AS gas FROM blocks WHERE block_number % 2 = 0";
    assert_eq!(
        worker.run(60..140, sql).await,
        fixture.reference(&(60..140), sql).await
    );
    let after: Vec<_> = FILE_NAMES
        .iter()
        .map(|name| table_traffic(&fixture, name.trim_end_matches(".parquet")))
        .collect();
    assert_eq!(before[1..], after[1..], "blocks only");
    let touched: Vec<bool> = blocks_requests(&fixture)
        .iter()
        .zip(&requests_before)
        .map(|(after, before)| after > before)
        .collect();
    assert_eq!(touched, [false, true, true, false, false, false]);
    let sub_range = after[0].1 - before[0].1;
    let covering: u64 = (1..3)
        .map(|n| file_size(&fixture.chunks[n], "blocks.parquet"))
        .sum();
    assert!(sub_range < covering, "{sub_range} bytes of {covering}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_remote_reads_answer_like_whole_chunks() {
    let fixture = six();
    let remote = Worker::new(fixture.catalog());
    let whole = Worker::whole(fixture.catalog());
    // Ranges starting and ending mid-chunk, and aggregates, joins across tables, subqueries.
    let subquery = "SELECT count(*) AS n FROM transactions \
                    WHERE block_number IN (SELECT block_number FROM blocks WHERE gas_used > 0)";
    for blocks in [33..267, 120..121] {
        for sql in QUERIES.iter().chain(&SUMS[..2]).chain([&subquery]) {
            let expected = whole.run(blocks.clone(), sql).await;
            assert_eq!(
                remote.run(blocks.clone(), sql).await,
                expected,
                "{blocks:?}: {sql}"
            );
        }
    }
    assert!(
        remote.manager.list_chunks().is_empty(),
        "nothing downloaded"
    );
    assert_eq!(whole.manager.list_chunks().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_held_chunks_are_read_locally() {
    let fixture = six();
    let worker = Worker::new(fixture.catalog());
    for n in [1, 2] {
        worker.assign(&fixture.descriptions[n]).await;
    }
    let requests = fixture.origin.total_requests();
    let sql = QUERIES[5];
    let stream = worker.engine.query(&DATASET, 60..140, sql).await.unwrap();
    assert!(
        stream
            .used_chunks()
            .iter()
            .all(|chunk| !chunk.remote && !chunk.fetched)
    );
    assert_eq!(stream.pinned().len(), 2, "held chunks pinned");
    let answer = pretty(&stream.collect().await.unwrap());
    assert_eq!(answer, fixture.reference(&(60..140), sql).await);
    assert_eq!(fixture.origin.total_requests(), requests, "no request");

    // Held and remote chunks in one query: the held ones local, the other remote.
    let sql = "SELECT count(*) AS n, sum(gas) AS gas, min(block_number) AS first FROM transactions";
    let stream = worker.engine.query(&DATASET, 60..190, sql).await.unwrap();
    let used: Vec<_> = stream
        .used_chunks()
        .iter()
        .map(|chunk| chunk.remote)
        .collect();
    assert_eq!(used, [false, false, true]);
    let answer = pretty(&stream.collect().await.unwrap());
    assert_eq!(answer, fixture.reference(&(60..190), sql).await);
    assert_eq!(
        fixture.gets(1) + fixture.gets(2),
        6,
        "the assignment's downloads only"
    );
    assert!(fixture.gets(3) > 0);
    assert_eq!(
        worker.manager.list_chunks().len(),
        2,
        "nothing more downloaded"
    );
}

/// A query whose chunks cannot be on disk at once fails at once, saying how much it needs,
/// and downloads nothing; the budget's room for queries leaves out the assigned chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_query_bigger_than_the_budget_fails_at_once() {
    let fixture = six();
    let sizes: Vec<u64> = fixture.chunks.iter().map(|chunk| chunk.size()).collect();
    let largest = *sizes.iter().max().unwrap();
    let budget = 4 * largest;
    // The default fetch timeout (minutes): waiting for room that never comes would hang.
    let worker = Worker::with(
        fixture.catalog(),
        |config| config.with_disk_budget(budget),
        QueryConfig::default().with_remote_reads(false),
    );
    let sql = "SELECT count(*) FROM blocks";
    let guard = Duration::from_secs(60);

    let all = tokio::time::timeout(guard, worker.engine.query(&DATASET, 0..300, sql))
        .await
        .expect("fails at once, not after waiting for room");
    let Err(QueryError::TooLargeForBudget {
        needed,
        room,
        budget: told,
        chunks,
    }) = all
    else {
        panic!("{all:?}");
    };
    assert_eq!(needed, sizes.iter().sum::<u64>());
    assert_eq!((room, told, chunks), (budget, budget, 6));
    assert_eq!(fixture.all_gets(), [0; 6], "nothing downloaded");
    let message = QueryError::TooLargeForBudget {
        needed,
        room,
        budget,
        chunks,
    }
    .to_string();
    assert!(message.contains(&needed.to_string()), "{message}");

    // Chunk 0 assigned: the room for queries is the budget less its size.
    worker.assign(&fixture.descriptions[0]).await;
    let four = tokio::time::timeout(guard, worker.engine.query(&DATASET, 50..250, sql))
        .await
        .expect("fails at once");
    assert!(
        matches!(four, Err(QueryError::TooLargeForBudget { room, .. }) if room == budget - sizes[0]),
        "{four:?}"
    );
    assert_eq!(fixture.all_gets()[1..], [0; 5], "nothing downloaded");
    // Three chunks fit beside it, and the assigned one is read in place.
    let answer = tokio::time::timeout(guard, worker.run(0..200, sql))
        .await
        .unwrap();
    assert_eq!(answer, fixture.reference(&(0..200), sql).await);
}

/// Queries that each fit the budget but not all together take turns: none holds a chunk
/// while it waits for room, so none waits on another forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_queries_competing_for_the_budget_never_deadlock() {
    let fixture = six();
    let largest = fixture.chunks.iter().map(|c| c.size()).max().unwrap();
    // Room for two chunks: each query needs two, three queries run at once.
    let worker = Worker::with(
        fixture.catalog(),
        |config| config.with_disk_budget(2 * largest),
        QueryConfig::default().with_remote_reads(false),
    );
    let sql = "SELECT count(*) AS n, sum(gas_used) AS gas FROM blocks";
    let ranges = [20..70, 120..170, 220..270];
    let answers = tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::join_all(ranges.iter().map(|range| worker.run(range.clone(), sql))),
    )
    .await
    .expect("every query finishes");
    for (range, answer) in ranges.iter().zip(answers) {
        assert_eq!(answer, fixture.reference(range, sql).await, "{range:?}");
    }
    let totals = worker.manager.totals();
    assert!(totals.bytes_committed <= totals.disk_budget);
}

/// Issue 11 item 8: a query that starts while another runs is split into fewer partitions
/// (two CPUs' worth shared by two queries: one each), so it does not pay for a split the busy
/// CPUs cannot use; alone, or with adaptive partitions off, it gets all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_query_starting_beside_another_gets_fewer_partitions() {
    let fixture = six();
    let group_by = "EXPLAIN SELECT \"to\", count(*) AS n FROM transactions GROUP BY \"to\"";
    let split = "RepartitionExec: partitioning=Hash";
    for adaptive in [true, false] {
        let worker = Worker::with(
            fixture.catalog(),
            |config| config,
            QueryConfig::default()
                .with_target_partitions(2)
                .with_adaptive_partitions(adaptive),
        );
        let alone = worker.run(0..300, group_by).await;
        assert!(alone.contains(split), "alone: {alone}");
        // Another query runs as long as its stream is held.
        let other = worker
            .engine
            .query(&DATASET, 0..300, "SELECT count(*) FROM blocks")
            .await
            .unwrap();
        let beside = worker.run(0..300, group_by).await;
        assert_eq!(
            beside.contains(split),
            !adaptive,
            "beside another: {beside}"
        );
        drop(other);
        let after = worker.run(0..300, group_by).await;
        assert!(after.contains(split), "after the other: {after}");
    }
}

/// Local chunks whose rows all lie in the query's range, by their Parquet statistics, are read
/// without the range filter; the answers are those of the filtered reference, and a chunk
/// holding rows outside its declared range is still filtered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_chunks_inside_the_range_are_read_without_the_filter() {
    let fixture = six();
    let worker = Worker::whole(fixture.catalog());
    for blocks in [75..210, 0..300, 50..100] {
        for sql in QUERIES {
            let expected = fixture.reference(&blocks, sql).await;
            assert_eq!(
                worker.run(blocks.clone(), sql).await,
                expected,
                "{blocks:?}: {sql}"
            );
        }
    }
    // 75..210: 100..150 and 150..200 unfiltered, 50..100 and 200..250 filtered.
    let plan = worker
        .run(75..210, "EXPLAIN SELECT count(*) FROM blocks")
        .await;
    let scans: Vec<&str> = plan
        .lines()
        .filter(|line| line.contains("DataSourceExec"))
        .collect();
    assert_eq!(scans.len(), 2, "{plan}");
    let (filtered, whole): (Vec<&str>, Vec<&str>) = scans
        .iter()
        .partition(|line| line.contains("predicate=block_number"));
    assert_eq!((filtered.len(), whole.len()), (1, 1), "{plan}");
    for dir in ["0000000100-0000000150", "0000000150-0000000200"] {
        assert!(
            whole[0].contains(dir) && !filtered[0].contains(dir),
            "{plan}"
        );
    }
    for dir in ["0000000050-0000000100", "0000000200-0000000250"] {
        assert!(
            filtered[0].contains(dir) && !whole[0].contains(dir),
            "{plan}"
        );
    }
    // Aligned with the chunks: no filter at all.
    let plan = worker
        .run(50..150, "EXPLAIN SELECT count(*) FROM blocks")
        .await;
    assert!(!plan.contains("predicate=block_number"), "{plan}");

    // A chunk declared as 100..150 that holds blocks 100..200: its statistics show rows
    // outside 0..170, so they are filtered out although the declared range is inside.
    let origin = chunk_origin::Origin::start().unwrap();
    let synth = chunk_query::synth::Synth::new(chunk_query::synth::SynthConfig::small());
    let mut chunks = vec![synth.chunk(&DATASET, 0..100).unwrap()];
    let mut liar = synth.chunk(&DATASET, 100..200).unwrap();
    liar.blocks = 100..150;
    chunks.push(liar);
    let mut descriptions = Vec::new();
    for chunk in &chunks {
        for (name, bytes) in &chunk.files {
            origin.insert(&chunk.path(name), bytes.clone());
        }
        descriptions.push(chunk.describe(&DATASET, |path| origin.url(path)));
    }
    let worker = Worker::whole(Catalog::new(descriptions).unwrap());
    let answer = worker
        .run(
            0..170,
            "SELECT count(*) AS n, max(block_number) AS last FROM blocks",
        )
        .await;
    assert!(answer.contains("| 170 | 169  |"), "{answer}");
}

/// Local files go to DataFusion as `file://` URLs: a data directory whose name holds glob
/// characters and a space reads its chunks like any other (as a plain path, DataFusion took
/// it for a glob pattern and found no file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_named_like_a_glob_reads_its_chunks() {
    let fixture = six();
    let root = tempfile::tempdir().unwrap();
    let config = chunk_manager::Config::new(root.path().join("data [1]*?")).with_fsync(false);
    let manager = std::sync::Arc::new(chunk_manager::ChunkManager::open(config).unwrap());
    let engine = chunk_query::QueryEngine::with_config(
        manager,
        fixture.catalog(),
        QueryConfig::default().with_remote_reads(false),
    )
    .unwrap();
    for blocks in [75..210, 0..300] {
        for sql in QUERIES {
            let stream = engine.query(&DATASET, blocks.clone(), sql).await.unwrap();
            assert_eq!(
                pretty(&stream.collect().await.unwrap()),
                fixture.reference(&blocks, sql).await,
                "{blocks:?}: {sql}"
            );
        }
    }
}

/// Joins whose keys pair the block column of both sides, and whether each runs chunk by
/// chunk (a row matches only rows of its own chunk): all but one, whose keys span chunks.
/// Joins of three tables run chunk by chunk as a whole. The `NOT IN` is an anti join on the
/// block column (not null-aware: the column has no NULLs).
const JOINS: [(&str, bool); 12] = [
    (
        "SELECT count(*) AS n, sum(t.gas) AS gas, count(DISTINCT l.address) AS contracts \
         FROM transactions t JOIN logs l \
         ON t.block_number = l.block_number AND t.transaction_index = l.transaction_index \
         WHERE t.status = 1",
        true,
    ),
    (
        "SELECT b.block_number, count(t.hash) AS heavy FROM blocks b LEFT JOIN transactions t \
         ON b.block_number = t.block_number AND t.gas > 100000 \
         GROUP BY b.block_number ORDER BY b.block_number",
        true,
    ),
    (
        "SELECT count(*) AS n, count(b.hash) AS matched FROM blocks b RIGHT JOIN transactions t \
         ON b.block_number = t.block_number AND b.gas_used > t.gas * 10",
        true,
    ),
    (
        "SELECT count(*) AS n, count(t.hash) AS txs, count(l.address) AS logs \
         FROM (SELECT * FROM transactions WHERE transaction_index < 3) t \
         FULL JOIN (SELECT * FROM logs WHERE log_index % 2 = 0) l \
         ON t.block_number = l.block_number AND t.transaction_index = l.transaction_index",
        true,
    ),
    (
        "SELECT count(*) AS n FROM transactions t WHERE EXISTS (SELECT 1 FROM logs l \
         WHERE l.block_number = t.block_number AND l.transaction_index = t.transaction_index)",
        true,
    ),
    (
        "SELECT count(*) AS n FROM transactions t WHERE NOT EXISTS (SELECT 1 FROM logs l \
         WHERE l.block_number = t.block_number AND l.transaction_index = t.transaction_index)",
        true,
    ),
    (
        "SELECT a.block_number, count(*) AS pairs FROM transactions a JOIN transactions b \
         ON a.block_number = b.block_number AND a.transaction_index + 1 = b.transaction_index \
         GROUP BY a.block_number ORDER BY pairs DESC, a.block_number LIMIT 5",
        true,
    ),
    (
        "SELECT t.block_number AS block, count(*) AS n FROM transactions t JOIN logs l \
         ON t.block_number = l.block_number GROUP BY t.block_number \
         ORDER BY n DESC, block LIMIT 3",
        true,
    ),
    (
        "SELECT count(*) AS n, sum(b.gas_used) AS gas, count(DISTINCT l.address) AS contracts \
         FROM blocks b JOIN transactions t ON b.block_number = t.block_number \
         JOIN logs l \
         ON t.block_number = l.block_number AND t.transaction_index = l.transaction_index",
        true,
    ),
    (
        "SELECT b.block_number, count(t.hash) AS txs, count(l.log_index) AS logs \
         FROM blocks b LEFT JOIN transactions t \
         ON b.block_number = t.block_number AND t.transaction_index < 2 \
         LEFT JOIN logs l \
         ON t.block_number = l.block_number AND t.transaction_index = l.transaction_index \
         GROUP BY b.block_number ORDER BY b.block_number",
        true,
    ),
    (
        "SELECT count(*) AS n, sum(t.gas) AS gas FROM transactions t JOIN logs l \
         ON t.transaction_index = l.transaction_index AND t.nonce % 7 = l.log_index",
        false,
    ),
    (
        "SELECT count(*) AS n FROM blocks WHERE block_number NOT IN \
         (SELECT block_number FROM transactions WHERE gas > 190000)",
        true,
    ),
];

/// A worker whose queries run in two partitions (however many run at once) and read whole
/// chunks.
fn two_partitions(catalog: Catalog) -> Worker {
    Worker::with(
        catalog,
        |config| config,
        QueryConfig::default()
            .with_target_partitions(2)
            .with_adaptive_partitions(false)
            .with_remote_reads(false),
    )
}

/// Issue 11 item 8: a join on the block column runs chunk by chunk (one chunk's table at a
/// time per partition, built in parallel) and answers as DataFusion does over the files:
/// inner, outer, semi, anti and self joins, with filters on either side and non-equality
/// conditions; joins whose keys span chunks are left as planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_joins_on_the_block_column_run_chunk_by_chunk() {
    let fixture = six();
    let worker = two_partitions(fixture.catalog());
    for blocks in [75..210, 0..300] {
        for (sql, chunkwise) in JOINS {
            let expected = fixture.reference(&blocks, sql).await;
            assert_eq!(
                worker.run(blocks.clone(), sql).await,
                expected,
                "{blocks:?}: {sql}"
            );
            // Every hash join chunkwise (three tables: both), or none.
            let plan = worker.run(blocks.clone(), &format!("EXPLAIN {sql}")).await;
            let joins: Vec<&str> = plan
                .lines()
                .filter(|line| line.contains("HashJoinExec"))
                .collect();
            assert!(!joins.is_empty(), "{sql}\n{plan}");
            assert!(
                joins
                    .iter()
                    .all(|line| line.contains("ChunkwiseJoinExec") == chunkwise),
                "{blocks:?}: {sql}\n{plan}"
            );
        }
    }
    // Every chunk was joined, in two partitions (these chunks are small: two units of
    // three chunks each).
    let plan = worker
        .run(0..300, &format!("EXPLAIN ANALYZE {}", JOINS[0].0))
        .await;
    assert!(
        plan.contains("ChunkwiseJoinExec: chunks=6, units=2, partitions=2"),
        "{plan}"
    );
    assert!(plan.contains("chunks_joined=6"), "{plan}");
}

/// Issue 11 item 8: chunks that overlap (a range re-chunked) answer each block once in a
/// chunkwise join, as chunks that do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_chunkwise_joins_over_overlapping_chunks_count_each_block_once() {
    let overlapping = Fixture::new(&[0..100, 0..40, 40..100, 80..160]);
    let disjoint = Fixture::new(&[0..50, 50..100, 100..160]);
    let (a, b) = (
        two_partitions(overlapping.catalog()),
        two_partitions(disjoint.catalog()),
    );
    for (sql, _) in &JOINS[..4] {
        let expected = disjoint.reference(&(20..150), sql).await;
        assert_eq!(b.run(20..150, sql).await, expected, "{sql}");
        assert_eq!(a.run(20..150, sql).await, expected, "{sql}");
    }
    let plan = a.run(20..150, &format!("EXPLAIN {}", JOINS[0].0)).await;
    assert!(plan.contains("ChunkwiseJoinExec"), "{plan}");
}

/// The answer of `sql` over `blocks`, and whether its plan was reused.
async fn answer_and_reuse(
    worker: &Worker,
    blocks: std::ops::Range<u64>,
    sql: &str,
) -> (String, bool) {
    let stream = worker.engine.query(&DATASET, blocks, sql).await.unwrap();
    let reused = stream.plan_reused();
    (pretty(&stream.collect().await.unwrap()), reused)
}

/// Issue 11 item 8: a query that comes again over the same chunks, all on disk, reuses its
/// plan and answers alike; another range, a chunk no longer on disk, or an EXPLAIN plans
/// anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_repeated_query_reuses_its_plan() {
    let fixture = six();
    let worker = two_partitions(fixture.catalog());
    let run = |blocks, sql| answer_and_reuse(&worker, blocks, sql);
    // The chunks fetched (whole): a query that fetches keeps no plan.
    let stream = worker
        .engine
        .query(&DATASET, 75..210, QUERIES[0])
        .await
        .unwrap();
    assert!(stream.used_chunks().iter().all(|chunk| chunk.fetched));
    drop(stream);
    for sql in [QUERIES[2], JOINS[0].0, JOINS[1].0] {
        let expected = fixture.reference(&(75..210), sql).await;
        assert_eq!(run(75..210, sql).await, (expected.clone(), false), "{sql}");
        for _ in 0..3 {
            assert_eq!(run(75..210, sql).await, (expected.clone(), true), "{sql}");
        }
        let other = fixture.reference(&(75..200), sql).await;
        assert_eq!(run(75..200, sql).await, (other, false), "{sql}");
    }
    let explain = "EXPLAIN SELECT count(*) FROM blocks";
    for _ in 0..2 {
        assert!(!run(75..210, explain).await.1);
    }
    // A chunk gone from the disk: fetched again, planned again; then, the same chunk on
    // disk again (same id, same files), the plan is reused.
    let sql = QUERIES[0];
    let expected = fixture.reference(&(75..210), sql).await;
    assert_eq!(run(75..210, sql).await, (expected.clone(), false));
    assert_eq!(run(75..210, sql).await, (expected.clone(), true));
    worker.manager.delete_chunk(fixture.chunks[2].id);
    worker.manager.wait_idle().await;
    let stream = worker.engine.query(&DATASET, 75..210, sql).await.unwrap();
    assert!(!stream.plan_reused());
    assert!(stream.used_chunks().iter().any(|chunk| chunk.fetched));
    assert_eq!(pretty(&stream.collect().await.unwrap()), expected);
    assert_eq!(run(75..210, sql).await, (expected, true));
}

/// Issue 11 item 8: a query over more chunks than a kept plan may read (64) plans anew each
/// time (a plan holds every file's statistics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_query_over_many_chunks_keeps_no_plan() {
    let ranges: Vec<std::ops::Range<u64>> = (0..65).map(|n| n * 2..n * 2 + 2).collect();
    let fixture = Fixture::new(&ranges);
    let worker = two_partitions(fixture.catalog());
    let sql = QUERIES[0];
    let run = |blocks| answer_and_reuse(&worker, blocks, sql);
    // 65 chunks: never kept.
    let expected = fixture.reference(&(0..130), sql).await;
    for _ in 0..3 {
        assert_eq!(run(0..130).await, (expected.clone(), false));
    }
    // 64 chunks (on disk since the runs above): kept.
    let expected = fixture.reference(&(0..128), sql).await;
    assert_eq!(run(0..128).await, (expected.clone(), false));
    assert_eq!(run(0..128).await, (expected, true));
}
