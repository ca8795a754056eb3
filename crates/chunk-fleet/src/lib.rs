//! # chunk-fleet
//!
//! Chunks placed across a fleet of workers, and the cluster store the fleet shares.
//!
//! - [`placement`]: a pure, deterministic function from chunks (id, size) and live workers
//!   (id, capacity) to each worker's chunks: weighted rendezvous hashing with bounded loads,
//!   `R` replicas per chunk. Its ranking is also the failover order for queries.
//! - [`store`]: the cluster store on object storage (`file:///dir`, `s3://bucket/prefix`):
//!   members' heartbeats, immutable content-addressed assignments, and the state pointer,
//!   published so that two schedulers cannot corrupt it.
//! - [`scheduler`]: one round of the scheduler, a pure decision plus a function that reads
//!   and publishes.
//!
//! No DataFusion, no worker: the scheduler command and the worker's side use this crate.
//!
//! ```
//! use chunk_fleet::placement::ChunkSize;
//! use chunk_fleet::scheduler::{run_round, CatalogSnapshot, SchedulerConfig};
//! use chunk_fleet::store::{ClusterStore, Member};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = ClusterStore::open(&format!("file://{}", dir.path().display()))?;
//! for (id, port) in [("a", 8001), ("b", 8002), ("c", 8003)] {
//!     let member = Member::new(id, format!("http://127.0.0.1:{port}"), 1 << 40, 1_000);
//!     store.put_member(&member).await?;
//! }
//! let catalog = CatalogSnapshot {
//!     identity: "catalog-v1".into(),
//!     chunks: (0..100u8).map(|i| ChunkSize { id: [i; 32], bytes: 200 << 20 }).collect(),
//! };
//! let outcome = run_round(&store, &catalog, 2_000, &SchedulerConfig::default()).await?;
//! let state = outcome.published.expect("the first round publishes");
//! let assignment = store.read_assignment(&state.assignment).await?;
//! assert_eq!(assignment.workers.values().map(Vec::len).sum::<usize>(), 200); // R = 2
//!
//! // A worker reads the state and its part of the assignment.
//! let current = store.read_state().await?.expect("published");
//! assert_eq!(current.generation, 1);
//! assert!(!assignment.workers["a"].is_empty());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod placement;
pub mod scheduler;
pub mod store;
