//! One round of the scheduler: read the members, place the catalog, publish if it changed.
//!
//! # Overview
//!
//! [`plan_round`] is the decision, a pure function of the members, the catalog, the previous
//! state and assignment, and the time: it places the catalog on the live members and publishes
//! only if the assignment differs from the one in force. [`run_round`] wraps it with the store:
//! read, decide, put the assignment, publish the state. A scheduler is stateless: killed and
//! restarted, it reads the same store, computes the same placement and publishes nothing.
//!
//! # Safety
//!
//! - A member is live while its last heartbeat is younger than the liveness timeout (default
//!   60 s: generous, so that a slow heartbeat does not move chunks twice). The heartbeat time is
//!   the worker's clock, compared with the scheduler's: keep clocks in sync (NTP).
//! - With no live member, nothing is published: an empty assignment would make every worker
//!   drop every chunk, and "nobody answers" is more often the scheduler's own problem.
//! - Two schedulers at once: both may compute, only one publishes a generation; the other
//!   gets [`SchedulerError::Store`] with a conflict ([`SchedulerError::is_conflict`]) and
//!   tries again next round.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::placement::{
    ChunkSize, Params, PlacementDiff, PlacementError, WorkerCapacity, diff, place,
};
use crate::store::{Assignment, ClusterStore, Member, State, StoreError};

/// The scheduler's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// Replication and saturation of the placement.
    pub params: Params,
    /// A member silent for longer than this is gone (default 60 s).
    pub liveness_timeout: Duration,
    /// How long after publication a new assignment takes effect (default 0: at once).
    pub activation_delay: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            params: Params::default(),
            liveness_timeout: Duration::from_secs(60),
            activation_delay: Duration::ZERO,
        }
    }
}

/// The catalog as the scheduler sees it: an identity and every chunk with its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSnapshot {
    /// What identifies this version of the catalog (for example the sha256 of its file).
    pub identity: String,
    /// Every chunk and its size.
    pub chunks: Vec<ChunkSize>,
}

/// What a round decided.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundDecision {
    /// The assignment in force is still right; nothing to publish.
    Unchanged,
    /// No member is live: nothing is published, the previous state stays.
    NoLiveWorkers,
    /// A new assignment to publish.
    Publish {
        /// The new assignment.
        assignment: Assignment,
        /// The state to publish, once the assignment is stored (its id is filled in then).
        generation: u64,
        /// When it takes effect.
        effective_from_unix_ms: u64,
        /// Replicas added and removed per worker, against the previous assignment.
        moves: PlacementDiff,
    },
}

/// The outcome of a round, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPlan {
    /// The decision.
    pub decision: RoundDecision,
    /// The live members' ids, ascending.
    pub live_workers: Vec<String>,
    /// Workers live now and not in the previous state.
    pub joined: Vec<String>,
    /// Workers in the previous state and not live now.
    pub left: Vec<String>,
    /// Chunks with fewer replicas than wanted in the new placement (the fleet is full).
    pub under_replicated: usize,
}

/// A round that could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The placement refused its input (duplicate chunk ids in the catalog, bad params).
    #[error("placement: {0}")]
    Placement(#[from] PlacementError),
    /// The store failed, or another scheduler published first.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SchedulerError {
    /// Whether another scheduler published this generation first (try again next round).
    pub fn is_conflict(&self) -> bool {
        matches!(self, SchedulerError::Store(error) if error.is_conflict())
    }
}

/// Decides a round (see the module docs). Pure: no IO, no clock.
///
/// ```
/// use chunk_fleet::placement::ChunkSize;
/// use chunk_fleet::scheduler::{plan_round, CatalogSnapshot, RoundDecision, SchedulerConfig};
/// use chunk_fleet::store::Member;
/// let catalog = CatalogSnapshot {
///     identity: "v1".into(),
///     chunks: (0..10u8).map(|i| ChunkSize { id: [i; 32], bytes: 1 }).collect(),
/// };
/// let members = [Member::new("a", "http://127.0.0.1:1", 100, 1_000), Member::new("b", "http://127.0.0.1:2", 100, 1_000)];
/// let plan = plan_round(&members, &catalog, None, None, 2_000, &SchedulerConfig::default())?;
/// assert!(matches!(plan.decision, RoundDecision::Publish { generation: 1, .. }));
/// # Ok::<(), chunk_fleet::placement::PlacementError>(())
/// ```
pub fn plan_round(
    members: &[Member],
    catalog: &CatalogSnapshot,
    previous_state: Option<&State>,
    previous_assignment: Option<&Assignment>,
    now_unix_ms: u64,
    config: &SchedulerConfig,
) -> Result<RoundPlan, PlacementError> {
    let timeout = config.liveness_timeout.as_millis() as u64;
    let live: Vec<&Member> = members
        .iter()
        .filter(|member| member.heartbeat_unix_ms.saturating_add(timeout) >= now_unix_ms)
        .collect();
    let live_workers: BTreeSet<String> = live.iter().map(|m| m.worker_id.clone()).collect();
    let before: BTreeSet<String> = previous_state
        .map(|state| state.live_workers.iter().cloned().collect())
        .unwrap_or_default();
    let mut plan = RoundPlan {
        decision: RoundDecision::Unchanged,
        live_workers: live_workers.iter().cloned().collect(),
        joined: live_workers.difference(&before).cloned().collect(),
        left: before.difference(&live_workers).cloned().collect(),
        under_replicated: 0,
    };
    if live.is_empty() {
        plan.decision = RoundDecision::NoLiveWorkers;
        return Ok(plan);
    }
    let workers: Vec<WorkerCapacity> = live
        .iter()
        .map(|member| WorkerCapacity::new(member.worker_id.clone(), member.capacity_bytes))
        .collect();
    let placement = place(&catalog.chunks, &workers, config.params)?;
    plan.under_replicated = placement.unplaced.len();
    let assignment = Assignment::from_placement(&placement, catalog.identity.clone());
    let same_workers = previous_state.is_some_and(|state| state.live_workers == plan.live_workers);
    if same_workers && previous_assignment == Some(&assignment) {
        return Ok(plan);
    }
    let moves = match previous_assignment {
        Some(previous) => diff(&previous.workers, &assignment.workers),
        None => diff(&Default::default(), &assignment.workers),
    };
    plan.decision = RoundDecision::Publish {
        assignment,
        generation: previous_state.map_or(0, |state| state.generation) + 1,
        effective_from_unix_ms: now_unix_ms
            .saturating_add(config.activation_delay.as_millis() as u64),
        moves,
    };
    Ok(plan)
}

/// What [`run_round`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundOutcome {
    /// The plan, as decided.
    pub plan: RoundPlan,
    /// The state published, if the round published one.
    pub published: Option<State>,
    /// Member files that could not be read (each names its file); those workers count as gone.
    pub skipped_members: Vec<String>,
}

/// Runs one round against the store: reads members and state, decides with [`plan_round`],
/// and publishes (assignment first, then state).
///
/// An unreadable previous assignment is logged and replaced by a new one; an unreadable state
/// fails the round (publishing over a state one cannot read could undo a newer scheduler).
pub async fn run_round(
    store: &ClusterStore,
    catalog: &CatalogSnapshot,
    now_unix_ms: u64,
    config: &SchedulerConfig,
) -> Result<RoundOutcome, SchedulerError> {
    let members = store.list_members().await?;
    let previous_state = store.read_state().await?;
    let previous_assignment = match &previous_state {
        Some(state) => match store.read_assignment(&state.assignment).await {
            Ok(assignment) => Some(assignment),
            Err(error) => {
                tracing::warn!(%error, "previous assignment unreadable, publishing a new one");
                None
            }
        },
        None => None,
    };
    let plan = plan_round(
        &members.members,
        catalog,
        previous_state.as_ref(),
        previous_assignment.as_ref(),
        now_unix_ms,
        config,
    )?;
    let mut published = None;
    if let RoundDecision::Publish {
        assignment,
        generation,
        effective_from_unix_ms,
        moves,
    } = &plan.decision
    {
        let id = store.put_assignment(assignment, now_unix_ms).await?;
        let state = State::new(
            *generation,
            id,
            *effective_from_unix_ms,
            plan.live_workers.clone(),
            now_unix_ms,
        );
        store.write_state(&state).await?;
        tracing::info!(
            generation,
            assignment = %state.assignment,
            replicas_added = moves.added,
            replicas_removed = moves.removed,
            joined = ?plan.joined,
            left = ?plan.left,
            under_replicated = plan.under_replicated,
            "published a new assignment"
        );
        published = Some(state);
    }
    Ok(RoundOutcome {
        plan,
        published,
        skipped_members: members.skipped.iter().map(ToString::to_string).collect(),
    })
}
