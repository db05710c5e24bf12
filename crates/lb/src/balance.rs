//! Which member takes a request: a pure function of the members' state and the request's key.

use std::hash::{Hash, Hasher};

/// A pool's balancing strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Strategy {
    /// The seed's rotation.
    RoundRobin,
    /// Fewest requests in flight relative to `max_in_flight` (a compiler's JRuby count).
    #[default]
    LeastRequests,
    /// Rendezvous hashing on the client's certname: an agent stays on one member while it is
    /// healthy, and only the agents of a failed member move.
    CertnameHash,
    /// Shortest expected delay for *this* request, from each member's recent response times by
    /// kind of request (catalogs, the rest) and each node's catalog cost relative to the
    /// average: a member with room is expected to answer in that time, a full one in that plus
    /// its share of the queue. So a heavy catalog waits briefly for a fast compiler rather
    /// than take twice as long on a slow one, and light requests fill the slow one.
    LeastLatency,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Self::RoundRobin),
            "least-requests" => Ok(Self::LeastRequests),
            "certname-hash" => Ok(Self::CertnameHash),
            "least-latency" => Ok(Self::LeastLatency),
            other => Err(format!(
                "unknown balance {other:?}: expected round-robin, least-requests, certname-hash or least-latency"
            )),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RoundRobin => "round-robin",
            Self::LeastRequests => "least-requests",
            Self::CertnameHash => "certname-hash",
            Self::LeastLatency => "least-latency",
        })
    }
}

/// What selection needs to know of a member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct View<'a> {
    pub(crate) id: &'a str,
    /// Healthy, not drained, not already tried for this request.
    pub(crate) eligible: bool,
    pub(crate) standby: bool,
    pub(crate) in_flight: usize,
    pub(crate) max_in_flight: Option<usize>,
    /// This request's expected time to the response head on this member, in seconds, from
    /// recent answers; `None` before the first.
    pub(crate) latency: Option<f64>,
    /// How long a request holds one of this member's slots, on average, in seconds (what a
    /// queued request waits for).
    pub(crate) slot_time: Option<f64>,
}

impl View<'_> {
    fn has_room(&self) -> bool {
        self.max_in_flight.is_none_or(|max| self.in_flight < max)
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Send to the member at this index.
    Member(usize),
    /// Members are eligible but all are at `max_in_flight`: queue.
    Full,
    /// No member is eligible: nothing to wait for.
    NoneEligible,
}

/// The pool's queue as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Queue {
    /// Requests waiting now.
    pub(crate) waiting: usize,
    /// Whether one more may wait.
    pub(crate) has_room: bool,
}

/// Picks a member: eligible primaries first, standbys only when no primary is eligible.
/// `turn` drives round-robin and tie-breaks; `key` is the certname for hashing.
pub(crate) fn pick(
    strategy: Strategy,
    members: &[View<'_>],
    turn: usize,
    key: Option<&str>,
    queue: Queue,
) -> Pick {
    let primaries: Vec<usize> =
        (0..members.len()).filter(|&i| members[i].eligible && !members[i].standby).collect();
    let tier = if primaries.is_empty() {
        (0..members.len()).filter(|&i| members[i].eligible && members[i].standby).collect()
    } else {
        primaries
    };
    if tier.is_empty() {
        return Pick::NoneEligible;
    }
    let with_room: Vec<usize> = tier.iter().copied().filter(|&i| members[i].has_room()).collect();
    if with_room.is_empty() {
        return Pick::Full;
    }
    if strategy == Strategy::LeastLatency {
        return shortest_expected_delay(members, &tier, turn, queue);
    }
    let chosen = match strategy {
        Strategy::RoundRobin => with_room[turn % with_room.len()],
        Strategy::LeastRequests | Strategy::LeastLatency => least_loaded(members, &with_room, turn),
        Strategy::CertnameHash => match key {
            Some(key) => highest_score(members, &with_room, key),
            None => least_loaded(members, &with_room, turn),
        },
    };
    Pick::Member(chosen)
}

/// Lowest in-flight/max ratio; among equals, rotate so that idle members share the load.
fn least_loaded(members: &[View<'_>], candidates: &[usize], turn: usize) -> usize {
    let load = |i: usize| {
        let m = &members[i];
        // Compare a/b < c/d as a*d < c*b; no limit counts as a large capacity.
        (m.in_flight as u128, m.max_in_flight.unwrap_or(1 << 20) as u128)
    };
    let n = candidates.len();
    (0..n)
        .map(|k| candidates[(turn + k) % n])
        .min_by(|&a, &b| {
            let (fa, ma) = load(a);
            let (fb, mb) = load(b);
            (fa * mb).cmp(&(fb * ma))
        })
        .unwrap_or(candidates[0])
}

/// The member (full or not) a request is expected to be answered soonest by: the request's
/// expected time there if it has room, plus the member's share of the queue if it is full (so
/// waiting for a fast member wins over a slow member with room while the queue is short).
/// Members without a `max_in_flight` share their capacity, so their expectation grows with
/// every request in flight (peak-EWMA's cost). Members not yet measured count as fastest, so
/// they get measured.
fn shortest_expected_delay(
    members: &[View<'_>],
    tier: &[usize],
    turn: usize,
    queue: Queue,
) -> Pick {
    let expected = |i: usize| {
        let m = &members[i];
        let latency = m.latency.unwrap_or(0.0);
        let slot = m.slot_time.unwrap_or(latency);
        match m.max_in_flight {
            None => latency + slot * m.in_flight as f64,
            Some(_) if m.has_room() => latency,
            Some(max) => latency + slot * (queue.waiting + 1) as f64 / max.max(1) as f64,
        }
    };
    let candidates: Vec<usize> =
        tier.iter().copied().filter(|&i| queue.has_room || members[i].has_room()).collect();
    let n = candidates.len();
    let best = (0..n).map(|k| candidates[(turn + k) % n]).min_by(|&a, &b| {
        expected(a).total_cmp(&expected(b)).then_with(|| {
            let (ma, mb) = (&members[a], &members[b]);
            let cap = |m: &View<'_>| m.max_in_flight.unwrap_or(1 << 20) as u128;
            (ma.in_flight as u128 * cap(mb)).cmp(&(mb.in_flight as u128 * cap(ma)))
        })
    });
    match best {
        Some(i) if members[i].has_room() => Pick::Member(i),
        Some(_) => Pick::Full,
        None => Pick::Full,
    }
}

fn highest_score(members: &[View<'_>], candidates: &[usize], key: &str) -> usize {
    candidates.iter().copied().max_by_key(|&i| score(members[i].id, key)).unwrap_or(candidates[0])
}

/// Rendezvous (highest random weight) score of a member for a key.
fn score(member: &str, key: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    member.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, in_flight: usize, max: Option<usize>) -> View<'_> {
        View {
            id,
            eligible: true,
            standby: false,
            in_flight,
            max_in_flight: max,
            latency: None,
            slot_time: None,
        }
    }

    #[test]
    fn round_robin_rotates_over_eligible_primaries() {
        let mut ms = vec![view("a", 0, None), view("b", 0, None), view("c", 0, None)];
        ms[1].eligible = false;
        let picks: Vec<Pick> =
            (0..4).map(|t| pick(Strategy::RoundRobin, &ms, t, None, Queue::default())).collect();
        assert_eq!(picks, [Pick::Member(0), Pick::Member(2), Pick::Member(0), Pick::Member(2)]);
    }

    #[test]
    fn least_requests_uses_the_ratio_to_max_in_flight() {
        let ms = [view("a", 2, Some(4)), view("b", 1, Some(1)), view("c", 3, Some(8))];
        // a: 2/4 = 0.5, b: full, c: 3/8 = 0.375
        assert_eq!(pick(Strategy::LeastRequests, &ms, 0, None, Queue::default()), Pick::Member(2));
        let idle = [view("a", 0, Some(4)), view("b", 0, Some(4))];
        let spread: Vec<Pick> = (0..2)
            .map(|t| pick(Strategy::LeastRequests, &idle, t, None, Queue::default()))
            .collect();
        assert_eq!(spread, [Pick::Member(0), Pick::Member(1)], "ties rotate");
    }

    #[test]
    fn full_members_mean_queue_and_no_members_mean_none() {
        let full = [view("a", 1, Some(1)), view("b", 2, Some(2))];
        assert_eq!(pick(Strategy::LeastRequests, &full, 0, None, Queue::default()), Pick::Full);
        let mut down = [view("a", 0, None)];
        down[0].eligible = false;
        assert_eq!(
            pick(Strategy::RoundRobin, &down, 0, None, Queue::default()),
            Pick::NoneEligible
        );
        assert_eq!(pick(Strategy::RoundRobin, &[], 0, None, Queue::default()), Pick::NoneEligible);
    }

    #[test]
    fn standbys_serve_only_when_no_primary_is_eligible() {
        let mut ms = [view("primary", 0, None), view("standby", 0, None)];
        ms[1].standby = true;
        assert_eq!(pick(Strategy::RoundRobin, &ms, 1, None, Queue::default()), Pick::Member(0));
        ms[0].eligible = false;
        assert_eq!(pick(Strategy::RoundRobin, &ms, 1, None, Queue::default()), Pick::Member(1));
        // A full primary is queued for, not spilled to the standby (a hot standby is not extra
        // capacity).
        let mut busy = [view("primary", 1, Some(1)), view("standby", 0, None)];
        busy[1].standby = true;
        assert_eq!(pick(Strategy::RoundRobin, &busy, 0, None, Queue::default()), Pick::Full);
    }

    fn timed(id: &str, in_flight: usize, max: usize, latency: f64) -> View<'_> {
        View { latency: Some(latency), slot_time: Some(latency), ..view(id, in_flight, Some(max)) }
    }

    #[test]
    fn least_latency_prefers_a_fast_member_with_room_and_queues_for_one_while_the_queue_is_short() {
        let open = Queue { waiting: 0, has_room: true };
        let ms = [timed("fast", 3, 4, 1.0), timed("slow", 0, 4, 2.0)];
        assert_eq!(pick(Strategy::LeastLatency, &ms, 0, None, open), Pick::Member(0));
        // The fast one full: waiting for it (1 + 1/4) beats the slow one's 2.
        let ms = [timed("fast", 4, 4, 1.0), timed("slow", 0, 4, 2.0)];
        assert_eq!(pick(Strategy::LeastLatency, &ms, 0, None, open), Pick::Full);
        // With four already waiting, the slow member with room is sooner.
        let long = Queue { waiting: 4, has_room: true };
        assert_eq!(pick(Strategy::LeastLatency, &ms, 0, None, long), Pick::Member(1));
        // With no room in the queue, a member with room takes it whatever its speed.
        let closed = Queue { waiting: 0, has_room: false };
        assert_eq!(pick(Strategy::LeastLatency, &ms, 0, None, closed), Pick::Member(1));
    }

    #[test]
    fn least_latency_sends_a_light_request_to_a_slow_member_rather_than_wait_behind_catalogs() {
        let open = Queue { waiting: 0, has_room: true };
        // A 10 ms request: 20 ms on the slow member beats waiting a quarter of a 1 s catalog.
        let light = [
            View { latency: Some(0.01), slot_time: Some(1.0), ..view("fast", 4, Some(4)) },
            View { latency: Some(0.02), slot_time: Some(2.0), ..view("slow", 0, Some(4)) },
        ];
        assert_eq!(pick(Strategy::LeastLatency, &light, 0, None, open), Pick::Member(1));
        // A heavy catalog (5 s here, 10 s there) waits for the fast member instead.
        let heavy = [
            View { latency: Some(5.0), slot_time: Some(1.0), ..view("fast", 4, Some(4)) },
            View { latency: Some(10.0), slot_time: Some(2.0), ..view("slow", 0, Some(4)) },
        ];
        assert_eq!(pick(Strategy::LeastLatency, &heavy, 0, None, open), Pick::Full);
    }

    #[test]
    fn least_latency_measures_new_members_and_spreads_equals() {
        let open = Queue { waiting: 0, has_room: true };
        let ms = [timed("known", 0, 4, 0.5), view("new", 0, Some(4))];
        assert_eq!(pick(Strategy::LeastLatency, &ms, 0, None, open), Pick::Member(1));
        let equal = [timed("a", 1, 4, 1.0), timed("b", 0, 4, 1.0)];
        assert_eq!(pick(Strategy::LeastLatency, &equal, 0, None, open), Pick::Member(1));
        // Unlimited members share their capacity: two in flight on the fast one (1 + 2 × 1)
        // cost more than the slow idle one (2.5).
        let shared = [
            View { latency: Some(1.0), slot_time: Some(1.0), ..view("fast", 2, None) },
            View { latency: Some(2.5), slot_time: Some(2.5), ..view("slow", 0, None) },
        ];
        assert_eq!(pick(Strategy::LeastLatency, &shared, 0, None, open), Pick::Member(1));
    }

    #[test]
    fn certname_hash_keeps_agents_in_place_and_moves_only_a_failed_members_agents() {
        let ids = ["c1", "c2", "c3", "c4"];
        let all: Vec<View<'_>> = ids.iter().map(|id| view(id, 0, None)).collect();
        let agents: Vec<String> = (0..400).map(|i| format!("agent{i}.example.com")).collect();
        let before: Vec<Pick> = agents
            .iter()
            .map(|a| pick(Strategy::CertnameHash, &all, 0, Some(a), Queue::default()))
            .collect();
        let again: Vec<Pick> = agents
            .iter()
            .map(|a| pick(Strategy::CertnameHash, &all, 7, Some(a), Queue::default()))
            .collect();
        assert_eq!(before, again, "stable whatever the turn");
        for member in 0..ids.len() {
            let share = before.iter().filter(|p| **p == Pick::Member(member)).count();
            assert!((50..=150).contains(&share), "member {member} got {share} of 400");
        }
        let mut one_down = all.clone();
        one_down[2].eligible = false;
        for (agent, old) in agents.iter().zip(&before) {
            let new = pick(Strategy::CertnameHash, &one_down, 0, Some(agent), Queue::default());
            if *old != Pick::Member(2) {
                assert_eq!(new, *old, "{agent} moved although its member is healthy");
            } else {
                assert_ne!(new, Pick::Member(2));
            }
        }
    }
}
