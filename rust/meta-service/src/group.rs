//! This node's member of the meta group and, while it leads, the leader's work: every
//! write is decided by [`Leader`] against the applied state machine and sent through
//! the Raft log; the answer is what applying it gave. Reads are confirmed with the
//! group first, so no node answers from a state older than the last acknowledged write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ForwardToLeader, RaftError};
use openraft::raft::VoteResponse;
use openraft::{BasicNode, LogId, Raft, RaftMetrics, ServerState};
use tokio::sync::{oneshot, watch, Notify};

use memcache_core::Medium;
use memcache_core::{
    Clock, Error, Key, KeyInfo, LocalServiceId, Result, SegmentId, MAX_BATCH_OP_COUNT,
};
use memcache_meta::{
    demotions, promotions, AllocRequest, Applied, Command, Joining, Leader, Plan, StateMachine,
};
use memcache_proto::{Allocation, LeaseId, Located, PutId, TierMove};
use memcache_proto::{HbmAnswer, HbmReport, Redirect, RoleInfo, SsdAnswer, SsdReport};
use memcache_raft::{LogStore, NodeId, Response, StateMachineStore, TypeConfig};

/// Longest wait for a command to be applied; past it the answer is "unknown", since it
/// may still be applied later.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

type Metrics = RaftMetrics<NodeId, BasicNode>;

/// Batches of one kind in the log at once, so a request no longer waits for the batch
/// before it to be applied. Commits and removals are decided by applying them (a key
/// an earlier batch removes is answered "not found" by `apply`, as it would be by the
/// plan), and an allocation is planned after those still in the log (see
/// [`Leader::pipeline_allocs`]); so each batch is only put in the log in the order it
/// was decided.
const PIPELINE_DEPTH: usize = 4;

/// A command put in the log; it resolves once the command is applied here.
type Proposed = tokio::sync::oneshot::Receiver<
    std::result::Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        openraft::error::ClientWriteError<NodeId, BasicNode>,
    >,
>;

/// A decided plan whose command (if any) is in the log.
struct Submitted<T> {
    plan: Plan<T>,
    proposed: Option<Result<Proposed>>,
}

/// A waiting request, its item count and where its answers go.
type Waiting<R, T> = (R, usize, oneshot::Sender<Vec<Result<T>>>);

/// Waiting requests of one kind.
struct Batches<R, T> {
    waiting: Mutex<Vec<Waiting<R, T>>>,
    /// Whether a task is deciding this kind's batches (at most one is).
    driving: AtomicBool,
    /// Held while a batch is decided and put in the log, so batches enter the log in
    /// the order they were decided.
    turn: tokio::sync::Mutex<()>,
    /// Room for this kind's batches in the log ([`PIPELINE_DEPTH`]).
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl<R, T> Batches<R, T> {
    fn new() -> Self {
        Batches {
            waiting: Mutex::new(Vec::new()),
            driving: AtomicBool::new(false),
            turn: tokio::sync::Mutex::new(()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(PIPELINE_DEPTH)),
        }
    }

    /// The requests of the next batch, up to the batch limit in items (and at least
    /// one request, which the plan then refuses if it alone is over the limit).
    fn next_batch(&self) -> Vec<Waiting<R, T>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let (mut take, mut items) = (0, 0);
        while take < waiting.len() && (take == 0 || items + waiting[take].1 <= MAX_BATCH_OP_COUNT) {
            items += waiting[take].1;
            take += 1;
        }
        waiting.drain(..take).collect()
    }
}

pub struct Group {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub store: StateMachineStore,
    log: LogStore,
    /// Set while this member's log may lack entries it acknowledged (see
    /// [`LogStore::cut_tail`]): it refuses votes and does not campaign.
    recovering: AtomicBool,
    metrics: watch::Receiver<Metrics>,
    clock: Clock,
    leader: Mutex<Leader>,
    /// The term this node has caught up with as leader (0: none yet).
    ready_term: AtomicU64,
    catching_up: tokio::sync::Mutex<()>,
    /// Requests of concurrent callers, decided together: one command per batch, while
    /// the next one gathers; up to [`PIPELINE_DEPTH`] batches of a kind in the log.
    /// Registrations take the allocations' turn.
    allocs: Batches<AllocRequest, Allocation>,
    commits: Batches<Vec<(Key, PutId)>, ()>,
    removes: Batches<Vec<Key>, ()>,
    /// Signalled whenever a command that dropped keys is finished.
    settled: Notify,
    /// Segment ids given out by this node start here, above any an earlier group gave.
    segment_base: SegmentId,
}

impl Group {
    pub fn new(
        id: NodeId,
        raft: Raft<TypeConfig>,
        (log, store): (LogStore, StateMachineStore),
        mut leader: Leader,
        clock: Clock,
        peers: usize,
    ) -> Group {
        leader.pipeline_allocs();
        // A member alone has nobody to wait for: what it lost, the group lost.
        let recovering = log.cut_tail() && peers > 1;
        if recovering {
            tracing::warn!(
                id,
                "the Raft log lost its tail: not voting or campaigning until caught up with a leader"
            );
            raft.runtime_config().elect(false);
        }
        Group {
            id,
            log,
            recovering: AtomicBool::new(recovering),
            metrics: raft.metrics(),
            raft,
            store,
            segment_base: clock.now_ms().max(1) << 20,
            clock,
            leader: Mutex::new(leader),
            ready_term: AtomicU64::new(0),
            catching_up: tokio::sync::Mutex::new(()),
            allocs: Batches::new(),
            commits: Batches::new(),
            removes: Batches::new(),
            settled: Notify::new(),
        }
    }

    /// A vote this member must not grant while it recovers a lost log tail; `None`
    /// when it may vote.
    pub fn refusal_while_recovering(&self) -> Option<VoteResponse<NodeId>> {
        if !self.recovering.load(Ordering::Acquire) {
            return None;
        }
        let vote = self.metrics.borrow().vote;
        Some(VoteResponse {
            vote,
            vote_granted: false,
            last_log_id: self.log.last_log_id(),
        })
    }

    /// After an append a leader accepted, this log agrees with the leader's up to
    /// `matched`: once that reaches the leader's commit index, nothing this member
    /// acknowledged is missing any more.
    pub fn appended(&self, matched: Option<LogId<NodeId>>, leader_commit: Option<LogId<NodeId>>) {
        if !self.recovering.load(Ordering::Acquire) {
            return;
        }
        if matched.map(|l| l.index) >= leader_commit.map(|c| c.index) {
            if let Err(e) = self.log.caught_up() {
                tracing::warn!(id = self.id, error = %e, "marking the log caught up");
                return;
            }
            self.recovering.store(false, Ordering::Release);
            self.raft.runtime_config().elect(true);
            tracing::info!(id = self.id, "caught up with the leader: voting again");
        }
    }

    fn leader(&self) -> MutexGuard<'_, Leader> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn addr_of(&self, m: &Metrics, id: NodeId) -> Option<SocketAddr> {
        let node = m.membership_config.membership().get_node(&id)?;
        node.addr.parse().ok()
    }

    fn redirect(&self, leader: Option<NodeId>) -> Redirect {
        let m = self.metrics.borrow();
        Redirect {
            leader: leader
                .filter(|l| *l != self.id)
                .and_then(|l| self.addr_of(&m, l)),
        }
    }

    fn forward(&self, f: &ForwardToLeader<NodeId, BasicNode>) -> Redirect {
        Redirect {
            leader: f
                .leader_node
                .as_ref()
                .and_then(|n| n.addr.parse().ok())
                .filter(|_| f.leader_id != Some(self.id)),
        }
    }

    pub fn role(&self) -> RoleInfo {
        let m = self.metrics.borrow();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        RoleInfo {
            id: self.id,
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader,
            leader_addr: m.current_leader.and_then(|l| self.addr_of(&m, l)),
            members: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    /// Whether this node leads now (without asking the group).
    pub fn is_leader(&self) -> bool {
        let m = self.metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Whether this node leads a group of which it is the only voter.
    fn alone(&self) -> bool {
        let m = self.metrics.borrow();
        let mut voters = m.membership_config.membership().voter_ids();
        m.state == ServerState::Leader && voters.next() == Some(self.id) && voters.next().is_none()
    }

    /// Ok when this node leads and has caught up with its term: the state machine has
    /// applied everything earlier leaders committed, and the leader's soft state is
    /// fresh (`on_new_term` runs once per term, before any request is served).
    /// Otherwise, where to go instead.
    pub async fn lead(&self, on_new_term: impl FnOnce()) -> std::result::Result<(), Redirect> {
        let (term, leads, known) = {
            let m = self.metrics.borrow();
            let leads = m.state == ServerState::Leader && m.current_leader == Some(self.id);
            (m.current_term, leads, m.current_leader)
        };
        if !leads {
            return Err(self.redirect(known));
        }
        if self.ready_term.load(Ordering::Acquire) == term {
            return Ok(());
        }
        let _one = self.catching_up.lock().await;
        if self.ready_term.load(Ordering::Acquire) == term {
            return Ok(());
        }
        // Even alone: entries of an earlier term are applied only once this term's
        // first entry commits.
        self.confirm().await?;
        // The first term of a group has no predecessor; later ones may.
        let inherited = term > 1 && self.store.with_state(|sm| sm.object_count() > 0);
        self.leader().begin_term(self.clock.now_ms(), inherited);
        on_new_term();
        self.ready_term.store(term, Ordering::Release);
        tracing::info!(id = self.id, term, "leading the meta group");
        Ok(())
    }

    /// Makes the reads after it linearizable (see [`Group::confirm`]).
    async fn read_barrier(&self) -> std::result::Result<(), Redirect> {
        if self.alone() {
            // The only voter leads until it changes the membership itself, and every
            // write it acknowledged was applied before the acknowledgement.
            return Ok(());
        }
        self.confirm().await
    }

    /// Confirms with a quorum that this node still leads, and waits until its state
    /// machine has applied everything committed before.
    async fn confirm(&self) -> std::result::Result<(), Redirect> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.forward(&f))
            }
            Err(e) => {
                tracing::debug!(error = %e, "read barrier");
                Err(Redirect { leader: None })
            }
        }
    }

    /// Sends a command through the log and waits until it is applied here. Any failure
    /// leaves its fate unknown (it may still be committed), hence the retryable -3017.
    async fn propose(&self, cmd: Command) -> Result<Applied> {
        Self::applied(self.submit(cmd).await?).await
    }

    /// Puts a command in the log, behind every command submitted before it.
    async fn submit(&self, cmd: Command) -> Result<Proposed> {
        self.raft.client_write_ff(cmd).await.map_err(|e| {
            tracing::debug!(error = %e, "a write met a stopped Raft core");
            Error::NotConnectedToMeta
        })
    }

    /// What applying a submitted command gave.
    async fn applied(proposed: Proposed) -> Result<Applied> {
        match tokio::time::timeout(WRITE_TIMEOUT, proposed).await {
            Ok(Ok(Ok(reply))) => match reply.data {
                Response::Applied(a) => Ok(a),
                Response::Nothing => Err(Error::Failed("a command applied as nothing".into())),
            },
            Ok(Ok(Err(e))) => {
                tracing::debug!(error = %e, "a write lost its leader");
                Err(Error::NotConnectedToMeta)
            }
            Ok(Err(_)) | Err(_) => Err(Error::NotConnectedToMeta),
        }
    }

    /// Proposes a plan's command and finishes the plan, in a task of its own: a caller
    /// that goes away cannot leave the plan's keys doomed.
    async fn run<T: Clone + Send + 'static>(self: &Arc<Self>, plan: Plan<T>) -> Vec<Result<T>> {
        let this = self.clone();
        let task = tokio::spawn(async move { this.apply_plan(plan).await });
        task.await
            .unwrap_or_else(|e| vec![Err(Error::Failed(format!("proposing: {e}")))])
    }

    /// Proposes a plan's command and finishes the plan (callers make sure it runs to
    /// the end).
    async fn apply_plan<T: Clone>(&self, plan: Plan<T>) -> Vec<Result<T>> {
        let submitted = self.submit_plan(plan).await;
        self.finish_plan(submitted).await
    }

    /// Puts a plan's command (if any) in the log.
    async fn submit_plan<T: Clone>(&self, mut plan: Plan<T>) -> Submitted<T> {
        let proposed = match plan.take_command() {
            Some(cmd) => Some(self.submit(cmd).await),
            None => None,
        };
        Submitted { plan, proposed }
    }

    /// Waits for a submitted plan's command to be applied and gives the plan's
    /// answers (callers make sure it runs to the end).
    async fn finish_plan<T: Clone>(&self, submitted: Submitted<T>) -> Vec<Result<T>> {
        let applied = match submitted.proposed {
            Some(Ok(proposed)) => Some(Self::applied(proposed).await),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        let mut leader = self.leader();
        if matches!(applied, Some(Err(_))) {
            // It may still be applied, or never: planning stops counting on the order
            // of what is in flight.
            leader.alloc_unknown();
        }
        let out = submitted.plan.finish(&mut leader, applied);
        drop(leader);
        self.settled.notify_waiters();
        out
    }

    /// Runs `f` on the leader and the applied state, both locked (in that order).
    fn decide<R>(&self, f: impl FnOnce(&mut Leader, &mut StateMachine) -> R) -> R {
        let mut leader = self.leader();
        self.store.with_state_mut(|sm| f(&mut leader, sm))
    }

    // ---- local services ----

    /// Adds a local service; its segment ids, and which recovered objects were taken.
    pub async fn register(
        self: &Arc<Self>,
        joining: Joining,
        attachment: Vec<u8>,
    ) -> Result<(LocalServiceId, Vec<SegmentId>, Vec<bool>)> {
        let _one = self.allocs.turn.lock().await;
        // Applying takes the larger of this and the next unused id.
        let first = self.segment_base;
        let now = self.clock.now_ms();
        let cmd =
            self.decide(|leader, sm| leader.plan_register(sm, joining, first, attachment, now))?;
        let Command::RegisterService { service, .. } = cmd else {
            unreachable!("plan_register plans a registration")
        };
        match self.propose(cmd).await? {
            Applied::Registered(r) => r.map(|(ids, taken)| (service, ids, taken)),
            other => Err(Error::Failed(format!("registration gave {other:?}"))),
        }
    }

    /// One round of the SSD tier of `service`: records what it stored and erased,
    /// checks the objects it copied, and hands out its next work.
    pub async fn ssd_sync(
        self: &Arc<Self>,
        service: LocalServiceId,
        report: SsdReport,
    ) -> Result<SsdAnswer> {
        report.check()?;
        let limit = report.limit();
        let promoted = self.decide(|leader, _| leader.plan_promoted(report.promoted));
        self.run(promoted).await;
        let (stored, promote) = {
            // Decided in turn with allocations: they change the same segments.
            let _one = self.allocs.turn.lock().await;
            let now = self.clock.now_ms();
            let plan = self.decide(|leader, sm| {
                leader.plan_stored(sm, service, report.stored, report.trash_done, now)
            });
            let stored = self.run(plan).await;
            let (plan, records) =
                self.decide(|leader, sm| leader.plan_promote(sm, service, limit, now));
            (stored, promotions(records, self.run(plan).await))
        };
        let (current, work) = self.read(|leader, sm, now| {
            (
                leader.still_current(sm, &report.copied, now),
                leader.ssd_work(sm, service, limit, report.max_bytes),
            )
        });
        Ok(SsdAnswer {
            stored,
            current,
            work,
            promote,
        })
    }

    /// One round of a local service's HBM upkeep: the demotions it reports take
    /// effect, and its coldest HBM objects get DRAM to move to (see
    /// [`Leader::plan_hbm_demotion`]).
    pub async fn hbm_sync(
        self: &Arc<Self>,
        service: LocalServiceId,
        report: HbmReport,
    ) -> Result<HbmAnswer> {
        report.check()?;
        let limit = report.limit();
        // Decided in turn with allocations: they change the same segments.
        let _one = self.allocs.turn.lock().await;
        let now = self.clock.now_ms();
        let plan = self.decide(|leader, _| leader.plan_hbm_demoted(service, report.demoted, now));
        let demoted = self.run(plan).await;
        let (plan, from) =
            self.decide(|leader, sm| leader.plan_hbm_demotion(sm, service, limit, now));
        let demote = demotions(from, self.run(plan).await);
        Ok(HbmAnswer { demoted, demote })
    }

    pub async fn remove_service(&self, service: LocalServiceId) -> Result<usize> {
        if self.store.with_state(|sm| sm.service(service).is_none()) {
            return Err(Error::invalid(format!("unknown local service {service}")));
        }
        match self.propose(Command::RemoveService { service }).await? {
            Applied::ServiceRemoved { dropped_objects } => Ok(dropped_objects),
            other => Err(Error::Failed(format!("removing a service gave {other:?}"))),
        }
    }

    // ---- puts ----

    pub async fn alloc(self: &Arc<Self>, request: AllocRequest) -> Vec<Result<Allocation>> {
        let n = request.items.len();
        self.batched(
            |g| &g.allocs,
            request,
            n,
            |g, requests| {
                let now = g.clock.now_ms();
                g.decide(|leader, sm| leader.plan_alloc(sm, requests, now))
            },
        )
        .await
    }

    pub async fn commit(self: &Arc<Self>, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        let n = items.len();
        self.batched(
            |g| &g.commits,
            items,
            n,
            |g, requests| {
                let items = requests.into_iter().flatten().collect();
                let now = g.clock.now_ms();
                g.decide(|leader, sm| leader.plan_commit(sm, items, now))
            },
        )
        .await
    }

    pub async fn abort(self: &Arc<Self>, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        let now = self.clock.now_ms();
        let plan = self.leader().plan_abort(items, now);
        self.run(plan).await
    }

    /// Queues a request of `n` items and answers it once its batch is applied. One
    /// task per kind decides batch after batch while requests wait, so a caller that
    /// goes away cannot stall the others.
    async fn batched<R, T>(
        self: &Arc<Self>,
        kind: fn(&Group) -> &Batches<R, T>,
        request: R,
        n: usize,
        decide: fn(&Group, Vec<R>) -> Plan<T>,
    ) -> Vec<Result<T>>
    where
        R: Send + 'static,
        T: Clone + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let batches = kind(self);
        batches
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((request, n, tx));
        if !batches.driving.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().drive(kind, decide));
        }
        rx.await
            .unwrap_or_else(|_| vec![Err(Error::NotConnectedToMeta); n])
    }

    async fn drive<R, T>(
        self: Arc<Self>,
        kind: fn(&Group) -> &Batches<R, T>,
        decide: fn(&Group, Vec<R>) -> Plan<T>,
    ) where
        R: Send + 'static,
        T: Clone + Send + 'static,
    {
        let batches = kind(&self);
        loop {
            // Waiting for room in the log first lets more requests join the batch.
            let Ok(room) = batches.in_flight.clone().acquire_owned().await else {
                return;
            };
            let turn = batches.turn.lock().await;
            let batch = batches.next_batch();
            if batch.is_empty() {
                drop(turn);
                batches.driving.store(false, Ordering::Release);
                // A request queued after the last look, before the flag went down,
                // would wait for nobody: look again.
                let empty = batches
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty();
                if empty || batches.driving.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            }
            let mut requests = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for (r, n, tx) in batch {
                requests.push(r);
                replies.push((n, tx));
            }
            let plan = decide(&self, requests);
            let submitted = self.submit_plan(plan).await;
            drop(turn);
            let this = self.clone();
            tokio::spawn(async move {
                answer(this.finish_plan(submitted).await, replies);
                drop(room);
            });
        }
    }

    // ---- reads ----

    pub async fn lookup(
        &self,
        keys: &[Key],
        lease_ms: u64,
    ) -> std::result::Result<Vec<Result<Located>>, Redirect> {
        self.read_barrier().await?;
        let give_up = tokio::time::Instant::now() + WRITE_TIMEOUT;
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let now = self.clock.now_ms();
            if let Some(found) = self.decide(|leader, sm| leader.lookup(sm, keys, lease_ms, now)) {
                return Ok(found);
            }
            if tokio::time::timeout_at(give_up, settled).await.is_err() {
                return Ok(vec![Err(Error::NotConnectedToMeta); keys.len()]);
            }
        }
    }

    pub fn release(&self, leases: &[(Key, LeaseId)]) {
        self.leader().release(leases)
    }

    /// Records or clears the fences of issued data-plane capabilities (see
    /// [`Leader::fence_put`]), with the clock the leader decides by.
    pub fn fencing<R>(&self, f: impl FnOnce(&mut Leader, u64) -> R) -> R {
        let now = self.clock.now_ms();
        f(&mut self.leader(), now)
    }

    pub async fn exists(&self, keys: &[Key]) -> std::result::Result<Vec<Result<bool>>, Redirect> {
        self.read_barrier().await?;
        Ok(self.read(|leader, sm, now| leader.exists(sm, keys, now)))
    }

    pub async fn key_info(&self, keys: &[Key]) -> std::result::Result<Vec<KeyInfo>, Redirect> {
        self.read_barrier().await?;
        Ok(self.read(|leader, sm, now| leader.key_info(sm, keys, now)))
    }

    /// This node's own view, unconfirmed (admin pages and metrics).
    pub fn read<R>(&self, f: impl FnOnce(&Leader, &StateMachine, u64) -> R) -> R {
        let now = self.clock.now_ms();
        self.decide(|leader, sm| f(leader, sm, now))
    }

    // ---- removal and housekeeping ----

    pub async fn remove(self: &Arc<Self>, keys: Vec<Key>) -> Vec<Result<()>> {
        let n = keys.len();
        self.batched(
            |g| &g.removes,
            keys,
            n,
            |g, requests| {
                let keys = requests.into_iter().flatten().collect();
                let now = g.clock.now_ms();
                g.decide(|leader, sm| leader.plan_remove(sm, keys, now))
            },
        )
        .await
    }

    /// Rolls back overdue puts and frees expired objects (leader only).
    pub async fn reclaim(&self) {
        let now = self.clock.now_ms();
        let cmds = self.decide(|leader, sm| leader.plan_reclaim(sm, now));
        for cmd in cmds {
            if let Err(e) = self.propose(cmd).await {
                tracing::debug!(error = %e, "reclaiming");
            }
        }
    }

    // ---- pool-wide operations ----

    /// Removes every committed object no reader holds: one decision (its keys doomed
    /// together, see [`Leader::plan_remove_all`]), in turn with the other removals.
    /// Like `remove`, a command whose fate is unknown makes the answer -3017.
    pub async fn remove_all(self: &Arc<Self>) -> Result<usize> {
        let this = self.clone();
        // A task of its own: a caller that goes away cannot leave the keys doomed.
        let task = tokio::spawn(async move {
            let _one = this.removes.turn.lock().await;
            let now = this.clock.now_ms();
            let plans = this.decide(|leader, sm| leader.plan_remove_all(sm, now));
            let (mut removed, mut failed) = (0, None);
            for plan in plans {
                for r in this.apply_plan(plan).await {
                    match r {
                        Ok(()) => removed += 1,
                        Err(Error::ObjectNotFound) => {}
                        Err(e) => failed = Some(e),
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(removed),
            }
        });
        task.await
            .unwrap_or_else(|e| Err(Error::Failed(format!("removing all: {e}"))))
    }

    /// One step of an evict from DRAM to SSD (see [`Leader::plan_evict`]), decided in
    /// turn with allocations: both take memory replicas away.
    pub async fn evict(
        self: &Arc<Self>,
        keys: Vec<Key>,
        src: Medium,
        dst: Medium,
    ) -> Vec<Result<TierMove>> {
        let n = keys.len();
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _one = this.allocs.turn.lock().await;
            let now = this.clock.now_ms();
            let plan = this.decide(|leader, sm| leader.plan_evict(sm, keys, src, dst, now));
            this.apply_plan(plan).await
        });
        task.await
            .unwrap_or_else(|e| vec![Err(Error::Failed(format!("evicting: {e}"))); n])
    }

    /// One step of a prefetch from SSD to DRAM (see [`Leader::plan_prefetch`]): the
    /// SSD tiers' next rounds copy the objects back.
    pub async fn prefetch(
        &self,
        keys: &[Key],
        src: Medium,
        dst: Medium,
    ) -> std::result::Result<Vec<Result<TierMove>>, Redirect> {
        self.read_barrier().await?;
        let now = self.clock.now_ms();
        Ok(self.decide(|leader, sm| leader.plan_prefetch(sm, keys, src, dst, now)))
    }

    // ---- membership ----

    /// Adds a meta node: first as a learner that catches up, then as a voter.
    pub async fn add_member(&self, id: NodeId, addr: SocketAddr) -> Result<()> {
        let node = BasicNode::new(addr.to_string());
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(|e| Error::Failed(format!("adding meta node {id}: {e}")))?;
        let mut voters = self.voters();
        voters.insert(id, ());
        self.change_voters(voters.into_keys().collect()).await
    }

    /// Removes a meta node from the group.
    pub async fn remove_member(&self, id: NodeId) -> Result<()> {
        let mut voters = self.voters();
        if voters.remove(&id).is_none() {
            return Err(Error::invalid(format!("meta node {id} is not a voter")));
        }
        if voters.is_empty() {
            return Err(Error::invalid("the last meta node cannot leave"));
        }
        self.change_voters(voters.into_keys().collect()).await
    }

    fn voters(&self) -> BTreeMap<NodeId, ()> {
        let m = self.metrics.borrow();
        m.membership_config
            .membership()
            .voter_ids()
            .map(|v| (v, ()))
            .collect()
    }

    async fn change_voters(&self, voters: std::collections::BTreeSet<NodeId>) -> Result<()> {
        self.raft
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(|e| Error::Failed(format!("changing the meta group: {e}")))
    }
}

/// Hands each request of a batch its share of the batch's answers.
fn answer<T>(results: Vec<Result<T>>, replies: Vec<(usize, oneshot::Sender<Vec<Result<T>>>)>) {
    let mut results = results.into_iter();
    for (n, tx) in replies {
        let _ = tx.send(results.by_ref().take(n).collect());
    }
}
