//! Pools of backend members: who is eligible, who has room, and the bounded queue a request
//! waits in when every eligible member is at its `max_in_flight`.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{
    balance::{self, Pick, Queue, View},
    config::{HealthPolicy, PoolConfig, PoolSettings, UpstreamSettings},
    health::{Health, Transition},
    histogram::Histogram,
    upstream::{Endpoint, Upstream},
};

/// One backend of a pool.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) upstream: Arc<Upstream>,
    /// A hot standby (the seed's `status=+H`): used only when no primary is eligible.
    pub(crate) standby: bool,
    /// Requests this member takes at once (a compiler's JRuby count); `None` is unlimited.
    pub(crate) max_in_flight: Option<usize>,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
    drained: AtomicBool,
    health: Mutex<Health>,
    released: Arc<Notify>,
    /// Latency averages: all requests, catalogs, the rest (indexed by [`Work`]).
    latency: Mutex<[Ewma; 3]>,
    /// Why the member last went out of rotation, and when (unix seconds), for the admin page.
    last_down: Mutex<Option<(i64, String)>>,
    pub(crate) stats: MemberStats,
}

/// What a request asks of a compiler, for latency-aware selection: a catalog compile (heavy,
/// and heavier for some nodes than others) or anything else (light).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    Catalog,
    Other,
}

impl Work {
    pub(crate) fn of(path: &str) -> Self {
        if path.starts_with("/puppet/v3/catalog/") {
            Self::Catalog
        } else {
            Self::Other
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Catalog => 1,
            Self::Other => 2,
        }
    }
}

/// Nodes whose catalog cost a pool remembers; past this the memory starts over (a fleet's
/// nodes all come back within a run interval).
const NODES_REMEMBERED: usize = 200_000;

/// Each node's catalog cost relative to the compiler's average (1: average; 10: a node of a
/// slow environment), learnt from its compiles, for latency-aware selection.
#[derive(Debug, Default)]
struct NodeCosts(Mutex<std::collections::HashMap<Box<str>, f64>>);

impl NodeCosts {
    fn factor(&self, certname: &str) -> f64 {
        self.0.lock().ok().and_then(|costs| costs.get(certname).copied()).unwrap_or(1.0)
    }

    fn learn(&self, certname: &str, sample: f64) {
        let Ok(mut costs) = self.0.lock() else { return };
        if costs.len() >= NODES_REMEMBERED && !costs.contains_key(certname) {
            costs.clear();
        }
        let cost = costs.entry(certname.into()).or_insert(sample);
        *cost = 0.5 * *cost + 0.5 * sample;
    }
}

/// How fast a member's latency average forgets: linkerd2-proxy's peak-EWMA decays over 10 s.
const LATENCY_DECAY: Duration = Duration::from_secs(10);

/// A sample counts in a member's per-kind average as at most this many times the average.
/// Compile times are heavy-tailed: one compile of a slow environment's node whose cost is not
/// known yet, or one tail draw, would otherwise make a compiler look several times slower for
/// ten seconds and send the queue to the others. A compiler that truly slows down still shows:
/// each answer may raise its average by up to this factor's share. (Measured in
/// `bench/oracle.py`: over 21 seeds at 80% load, the p99 run time's median ratio to HAProxy's
/// went from 0.915 to 0.897 with a cap of 2; 3 gave 0.904.)
const SAMPLE_CAP: f64 = 2.0;

/// An exponentially weighted moving average over time: a sample's weight fades with its age,
/// not with the number of samples after it.
#[derive(Debug, Default)]
struct Ewma {
    value: Option<f64>,
    at: Option<Instant>,
}

impl Ewma {
    /// Records `sample` taken at most as `cap` times the average (no cap on the first sample).
    fn record_capped(&mut self, sample: f64, now: Instant, cap: f64) {
        let sample = self.value.map_or(sample, |old| sample.min(old * cap));
        self.record(sample, now);
    }

    fn record(&mut self, sample: f64, now: Instant) {
        let value = match (self.value, self.at) {
            (Some(old), Some(at)) => {
                let age = now.saturating_duration_since(at).as_secs_f64();
                let keep = (-age / LATENCY_DECAY.as_secs_f64()).exp();
                old * keep + sample * (1.0 - keep)
            }
            _ => sample,
        };
        self.value = Some(value);
        self.at = Some(now);
    }
}

/// Counters of one member, read by the admin endpoints.
#[derive(Debug, Default)]
pub(crate) struct MemberStats {
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) ejections: AtomicU64,
    /// Responses by status class: index 0 = 1xx … 4 = 5xx.
    pub(crate) by_class: [AtomicU64; 5],
}

impl Member {
    fn new(
        upstream: Upstream,
        standby: bool,
        max_in_flight: Option<usize>,
        released: Arc<Notify>,
    ) -> Self {
        Self {
            upstream: Arc::new(upstream),
            standby,
            max_in_flight,
            in_flight: AtomicUsize::new(0),
            latency: Mutex::new(Default::default()),
            last_down: Mutex::new(None),
            healthy: AtomicBool::new(true),
            drained: AtomicBool::new(false),
            health: Mutex::new(Health::new()),
            released,
            stats: MemberStats::default(),
        }
    }

    pub(crate) fn url(&self) -> &str {
        self.upstream.url()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Takes a slot if the member has room.
    fn try_start(self: &Arc<Self>) -> Option<InFlight> {
        let max = self.max_in_flight;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                max.is_none_or(|m| n < m).then_some(n + 1)
            })
            .ok()?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(self.clone()))
    }

    /// An active probe's result; returns the transition, if any.
    pub(crate) fn record_probe(&self, ok: bool, policy: &HealthPolicy) -> Option<Transition> {
        let transition = self.health.lock().ok()?.probe(ok, Instant::now(), policy);
        if transition == Some(Transition::Down) {
            self.note_down("failed its health checks");
        }
        self.apply(transition)
    }

    /// A request failed in a way that says the member is gone: out of rotation at once.
    pub(crate) fn eject(&self, policy: &HealthPolicy, reason: &str) -> Option<Transition> {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let transition = self.health.lock().ok()?.eject(Instant::now(), policy);
        if transition.is_some() {
            self.stats.ejections.fetch_add(1, Ordering::Relaxed);
            self.upstream.clear_idle();
            self.note_down(reason);
        }
        self.apply(transition)
    }

    fn note_down(&self, reason: &str) {
        if let Ok(mut last) = self.last_down.lock() {
            *last = Some((time::OffsetDateTime::now_utc().unix_timestamp(), reason.to_owned()));
        }
    }

    /// Why the member last went out of rotation, and when (unix seconds).
    pub(crate) fn last_down(&self) -> Option<(i64, String)> {
        self.last_down.lock().ok()?.clone()
    }

    /// How long until the next probe.
    pub(crate) fn next_probe_in(&self, interval: Duration) -> Duration {
        self.health.lock().map_or(interval, |h| h.next_probe_in(Instant::now(), interval))
    }

    fn apply(&self, transition: Option<Transition>) -> Option<Transition> {
        match transition {
            Some(Transition::Down) => self.healthy.store(false, Ordering::Relaxed),
            Some(Transition::Up) => {
                self.healthy.store(true, Ordering::Relaxed);
                // Requests queued while nothing was eligible may go now.
                self.released.notify_waiters();
            }
            None => {}
        }
        transition
    }

    /// Stops (`true`) or resumes (`false`) new requests to this member; in-flight ones finish.
    pub(crate) fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
        if !drained {
            self.released.notify_waiters();
        }
    }

    /// Records `took`, the time from sending a request of `work` to its response head, for
    /// latency-aware selection; `cost` is the node's cost relative to the average (1 when
    /// unknown). The all-requests average takes `took` (a queued request waits for whatever
    /// holds the slot); that of `work` takes an average node's time, `took / cost`, capped at
    /// [`SAMPLE_CAP`] times that average. Otherwise a member that heavy nodes are kept away
    /// from would look fast to the next heavy node, and one that takes them would look slow to
    /// light nodes.
    fn record_latency(&self, work: Work, took: Duration, cost: f64) {
        let now = Instant::now();
        if let Ok(mut ewma) = self.latency.lock() {
            ewma[0].record(took.as_secs_f64(), now);
            let sample = took.as_secs_f64() / cost.max(f64::MIN_POSITIVE);
            ewma[work.index()].record_capped(sample, now, SAMPLE_CAP);
        }
    }

    /// The recent latency average of all requests, in seconds; `None` before the first answer.
    pub(crate) fn latency(&self) -> Option<f64> {
        self.latency.lock().ok()?[0].value
    }

    fn latency_of(&self, work: Work) -> Option<f64> {
        self.latency.lock().ok()?[work.index()].value
    }

    /// Counts a response by status class.
    pub(crate) fn record_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.stats.by_class[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// A request in flight on a member; frees the slot and wakes one queued request on drop.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Member>);

impl InFlight {
    pub(crate) fn member(&self) -> &Arc<Member> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_one();
    }
}

/// Why a pool could not give a request a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// No member is healthy, undrained and untried.
    NoMember,
    /// Every eligible member is full and the queue is at its limit.
    QueueFull,
    /// The request waited `queue_timeout` without a member freeing up.
    QueueTimeout,
}

/// Counters of one pool.
#[derive(Debug, Default)]
pub(crate) struct PoolStats {
    pub(crate) duration: Histogram,
    pub(crate) shed_no_member: AtomicU64,
    pub(crate) shed_queue_full: AtomicU64,
    pub(crate) shed_queue_timeout: AtomicU64,
    pub(crate) shed_backend_failed: AtomicU64,
}

impl PoolStats {
    /// Counts a request shed for `why`.
    pub(crate) fn shed(&self, why: Shed) {
        let counter = match why {
            Shed::NoMember => &self.shed_no_member,
            Shed::QueueFull => &self.shed_queue_full,
            Shed::QueueTimeout => &self.shed_queue_timeout,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A named set of members.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) settings: PoolSettings,
    pub(crate) stats: PoolStats,
    members: Vec<Arc<Member>>,
    node_costs: NodeCosts,
    turn: AtomicUsize,
    queued: AtomicUsize,
    released: Arc<Notify>,
}

impl Pool {
    /// The pool `config` describes; members whose URL does not parse were refused by the config
    /// check already and are skipped.
    pub(crate) fn new(config: &PoolConfig, upstream: &UpstreamSettings) -> Self {
        let released = Arc::new(Notify::new());
        let members = config
            .members
            .iter()
            .filter_map(|m| {
                let endpoint = Endpoint::parse(&m.url).ok()?;
                let upstream = Upstream::new(endpoint, upstream.clone());
                Some(Arc::new(Member::new(upstream, m.standby, m.max_in_flight, released.clone())))
            })
            .collect();
        Self {
            name: config.name.clone(),
            settings: config.settings.clone(),
            stats: PoolStats::default(),
            members,
            node_costs: NodeCosts::default(),
            turn: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            released,
        }
    }

    pub(crate) fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    /// Requests waiting for a member.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether any member could take a request now (healthy and not drained).
    pub(crate) fn has_eligible(&self) -> bool {
        self.members.iter().any(|m| m.is_healthy() && !m.is_drained())
    }

    /// A slot on a member for one attempt, waiting in the pool's queue when all eligible members
    /// are full. `tried` excludes members this request already failed on.
    pub(crate) async fn acquire(
        &self,
        key: Option<&str>,
        work: Work,
        tried: &[usize],
    ) -> Result<(usize, InFlight), Shed> {
        let deadline = tokio::time::Instant::now() + self.settings.queue_timeout;
        let mut waiting: Option<QueueTicket<'_>> = None;
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pick(key, work, tried) {
                Pick::Member(index) => match self.members[index].try_start() {
                    Some(slot) => return Ok((index, slot)),
                    None => continue,
                },
                Pick::NoneEligible => return Err(Shed::NoMember),
                Pick::Full => {
                    if waiting.is_none() {
                        waiting = Some(
                            QueueTicket::take(&self.queued, self.settings.queue_max)
                                .ok_or(Shed::QueueFull)?,
                        );
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(Shed::QueueTimeout);
                    }
                }
            }
        }
    }

    fn pick(&self, key: Option<&str>, work: Work, tried: &[usize]) -> Pick {
        let aware = self.settings.strategy == balance::Strategy::LeastLatency;
        let factor = match (aware, work, key) {
            (true, Work::Catalog, Some(certname)) => self.node_costs.factor(certname),
            _ => 1.0,
        };
        let views: Vec<View<'_>> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| View {
                id: m.url(),
                eligible: m.is_healthy() && !m.is_drained() && !tried.contains(&i),
                standby: m.standby,
                in_flight: m.in_flight(),
                max_in_flight: m.max_in_flight,
                latency: if aware { m.latency_of(work).map(|l| l * factor) } else { None },
                slot_time: if aware { m.latency() } else { None },
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let waiting = self.queued();
        let queue = Queue { waiting, has_room: waiting < self.settings.queue_max };
        balance::pick(self.settings.strategy, &views, turn, key, queue)
    }

    /// A member answered a request of `work` for `certname` after `took`: its averages, and
    /// (catalogs, latency-aware pools) the node's cost relative to that member's average.
    pub(crate) fn learn(
        &self,
        member: &Member,
        work: Work,
        certname: Option<&str>,
        took: Duration,
    ) {
        let aware = self.settings.strategy == balance::Strategy::LeastLatency;
        let mut cost = 1.0;
        if let (true, Work::Catalog, Some(certname)) = (aware, work, certname) {
            cost = self.node_costs.factor(certname);
            if let Some(average) = member.latency_of(Work::Catalog).filter(|a| *a > 0.0) {
                self.node_costs.learn(certname, took.as_secs_f64() / average);
            }
        }
        member.record_latency(work, took, cost);
    }

    /// A jittered `Retry-After` in seconds, so that shed agents do not come back together.
    pub(crate) fn retry_after(&self) -> u64 {
        let (low, high) = self.settings.retry_after;
        fastrand::u64(low..=high.max(low))
    }
}

/// A place in a pool's queue; given back on drop.
struct QueueTicket<'a>(&'a AtomicUsize);

impl<'a> QueueTicket<'a> {
    fn take(queued: &'a AtomicUsize, max: usize) -> Option<Self> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .ok()?;
        Some(Self(queued))
    }
}

impl Drop for QueueTicket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Strategy;

    fn pool(specs: &[(bool, Option<usize>)], settings: PoolSettings) -> Pool {
        let members = specs
            .iter()
            .enumerate()
            .map(|(i, (standby, max))| crate::config::MemberConfig {
                url: format!("http://127.0.0.1:{}", 1000 + i),
                standby: *standby,
                max_in_flight: *max,
            })
            .collect();
        let config = PoolConfig { name: "p".into(), settings, members };
        Pool::new(&config, &UpstreamSettings::default())
    }

    fn quick() -> PoolSettings {
        PoolSettings {
            queue_max: 2,
            queue_timeout: Duration::from_millis(200),
            strategy: Strategy::RoundRobin,
            ..PoolSettings::default()
        }
    }

    #[tokio::test]
    async fn a_full_pool_queues_then_serves_when_a_slot_frees() {
        let pool = Arc::new(pool(
            &[(false, Some(1))],
            PoolSettings { queue_timeout: Duration::from_secs(10), ..quick() },
        ));
        let (_, first) = pool.acquire(None, Work::Other, &[]).await.expect("first slot");
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(None, Work::Other, &[]).await.map(|(i, _)| i) }
        });
        crate::test_util::until(|| pool.queued() == 1).await;
        drop(first);
        assert_eq!(waiter.await.expect("join"), Ok(0));
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_length_and_time() {
        let pool = Arc::new(pool(&[(false, Some(1))], quick()));
        let _held = pool.acquire(None, Work::Other, &[]).await.expect("slot");
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let pool = pool.clone();
            waiters.push(tokio::spawn(async move {
                pool.acquire(None, Work::Other, &[]).await.map(|(i, _)| i)
            }));
        }
        crate::test_util::until(|| pool.queued() == 2).await;
        assert_eq!(
            pool.acquire(None, Work::Other, &[]).await.map(|(i, _)| i),
            Err(Shed::QueueFull)
        );
        for waiter in waiters {
            assert_eq!(waiter.await.expect("join"), Err(Shed::QueueTimeout));
        }
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn ejected_and_drained_members_take_nothing_and_standbys_step_in() {
        let pool = pool(&[(false, None), (false, None), (true, None)], quick());
        let policy = HealthPolicy::default();
        assert_eq!(pool.members()[0].last_down(), None);
        assert_eq!(pool.members()[0].eject(&policy, "connection refused"), Some(Transition::Down));
        let (_, why) = pool.members()[0].last_down().unwrap_or_default();
        assert_eq!(why, "connection refused", "the page says why a member is out");
        for _ in 0..4 {
            assert_eq!(pool.acquire(None, Work::Other, &[]).await.map(|(i, _)| i), Ok(1));
        }
        pool.members()[1].set_drained(true);
        assert_eq!(
            pool.acquire(None, Work::Other, &[]).await.map(|(i, _)| i),
            Ok(2),
            "the standby"
        );
        assert_eq!(
            pool.acquire(None, Work::Other, &[2]).await.map(|(i, _)| i),
            Err(Shed::NoMember),
            "tried members are excluded"
        );
        pool.members()[1].set_drained(false);
        assert_eq!(pool.acquire(None, Work::Other, &[]).await.map(|(i, _)| i), Ok(1));
        assert_eq!(pool.members()[0].record_probe(true, &policy), None);
        assert_eq!(pool.members()[0].record_probe(true, &policy), Some(Transition::Up));
        assert!(pool.has_eligible());
    }

    #[tokio::test]
    async fn a_member_coming_back_wakes_the_queue() {
        let pool = Arc::new(pool(
            &[(false, Some(1))],
            PoolSettings { queue_timeout: Duration::from_secs(10), ..quick() },
        ));
        let policy = HealthPolicy { rise: 1, ..HealthPolicy::default() };
        let (_, slot) = pool.acquire(None, Work::Other, &[]).await.expect("slot");
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(None, Work::Other, &[]).await.map(|(i, _)| i) }
        });
        crate::test_util::until(|| pool.queued() == 1).await;
        pool.members()[0].eject(&policy, "test");
        drop(slot);
        assert_eq!(pool.members()[0].record_probe(true, &policy), Some(Transition::Up));
        assert_eq!(waiter.await.expect("join"), Ok(0));
    }

    #[test]
    fn a_pool_learns_which_nodes_have_heavy_catalogs_and_expects_them_to_take_longer() {
        let settings = PoolSettings { strategy: balance::Strategy::LeastLatency, ..quick() };
        let pool = pool(&[(false, Some(1)), (false, Some(1))], settings);
        let (fast, slow) = (&pool.members()[0], &pool.members()[1]);
        for _ in 0..4 {
            pool.learn(fast, Work::Catalog, Some("light"), Duration::from_millis(100));
            pool.learn(slow, Work::Catalog, Some("light"), Duration::from_millis(200));
            pool.learn(fast, Work::Other, None, Duration::from_millis(10));
        }
        pool.learn(fast, Work::Catalog, Some("heavy"), Duration::from_millis(1000));
        let heavy = pool.node_costs.factor("heavy");
        assert!(heavy > 4.0, "a catalog ten times the average makes a heavy node: {heavy}");
        assert!(pool.node_costs.factor("light") < 1.5);
        assert_eq!(pool.node_costs.factor("unknown"), 1.0);
        // Both members busy: the heavy node's catalog waits for the fast one rather than take
        // twice as long on the slow one, which would have room once its request ends.
        let fast_slot = pool.members()[0].try_start();
        assert!(fast_slot.is_some());
        assert_eq!(pool.pick(Some("heavy"), Work::Catalog, &[]), Pick::Full);
        assert_eq!(
            pool.pick(Some("light"), Work::Other, &[]),
            Pick::Member(1),
            "a light request takes the slow member"
        );
    }

    #[test]
    fn a_members_catalog_average_is_an_average_nodes_whoever_it_served() {
        let settings = PoolSettings { strategy: balance::Strategy::LeastLatency, ..quick() };
        let pool = pool(&[(false, Some(1)), (false, Some(1))], settings);
        let (fast, slow) = (&pool.members()[0], &pool.members()[1]);
        pool.node_costs.learn("heavy", 10.0);
        // The fast member compiles heavy nodes (a second each, a tenth for an average node);
        // the half-speed one is kept to light nodes (0.2 s each).
        for _ in 0..4 {
            pool.learn(fast, Work::Catalog, Some("heavy"), Duration::from_millis(1000));
            pool.learn(slow, Work::Catalog, Some("light"), Duration::from_millis(200));
        }
        let (f, s) = (fast.latency_of(Work::Catalog), slow.latency_of(Work::Catalog));
        assert!(f.zip(s).is_some_and(|(f, s)| f < s), "fast {f:?} against slow {s:?}");
        assert_eq!(
            pool.pick(Some("heavy"), Work::Catalog, &[]),
            Pick::Member(0),
            "the next heavy node goes to the fast member"
        );
    }

    #[test]
    fn the_latency_average_follows_recent_answers_and_forgets_old_ones() {
        let start = Instant::now();
        let mut ewma = Ewma::default();
        ewma.record(1.0, start);
        assert_eq!(ewma.value, Some(1.0), "the first sample is the average");
        ewma.record(3.0, start + Duration::from_millis(10));
        let soon = ewma.value.unwrap_or_default();
        assert!(soon > 1.0 && soon < 1.1, "a sample right after weighs little: {soon}");
        ewma.record(3.0, start + Duration::from_secs(60));
        let later = ewma.value.unwrap_or_default();
        assert!(later > 2.9, "a minute later the old average is forgotten: {later}");
    }

    #[test]
    fn one_heavy_compile_does_not_make_a_compiler_look_slow_but_a_slowdown_shows() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut fast = Ewma::default();
        fast.record_capped(0.1, at(0), SAMPLE_CAP);
        // A node of a slow environment, cost not yet known, compiles 20 times the average five
        // seconds later: uncapped, the average would be 0.85 s, over four times the 0.2 s of a
        // half-speed compiler's.
        fast.record_capped(2.0, at(5), SAMPLE_CAP);
        let after_one = fast.value.unwrap_or_default();
        assert!(after_one < 0.15, "one heavy compile moves the average a little: {after_one}");
        // The compiler itself turns 20 times slower: within half a minute it looks it.
        for s in 6..36 {
            fast.record_capped(2.0, at(s), SAMPLE_CAP);
        }
        let slowed = fast.value.unwrap_or_default();
        assert!(slowed > 1.0, "a compiler that slows down looks slow: {slowed}");
    }

    #[test]
    fn retry_after_is_jittered_within_its_range() {
        let pool = pool(&[(false, None)], quick());
        let values: std::collections::BTreeSet<u64> =
            (0..200).map(|_| pool.retry_after()).collect();
        assert!(values.iter().all(|v| (5..=15).contains(v)));
        assert!(values.len() > 3, "jitter spreads the values: {values:?}");
    }
}
