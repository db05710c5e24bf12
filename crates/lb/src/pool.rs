//! Pools of backend members and the order in which a request tries them.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use crate::upstream::Upstream;

/// One backend of a pool.
#[derive(Debug)]
pub struct Member {
    pub upstream: Arc<Upstream>,
    /// A hot standby (the seed's `status=+H`): used only when no primary can take the request.
    pub standby: bool,
    in_flight: AtomicUsize,
}

impl Member {
    pub fn new(upstream: Upstream, standby: bool) -> Self {
        Self { upstream: Arc::new(upstream), standby, in_flight: AtomicUsize::new(0) }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request against this member until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight on a member.
#[derive(Debug)]
pub struct InFlight(Arc<Member>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named set of members.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    members: Vec<Arc<Member>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(name: impl Into<String>, members: Vec<Member>) -> Self {
        Self {
            name: name.into(),
            members: members.into_iter().map(Arc::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    /// The members to try for one request, in order: the primaries round-robin, then the
    /// standbys in their configured order.
    pub fn candidates(&self) -> Vec<Arc<Member>> {
        let primaries: Vec<&Arc<Member>> = self.members.iter().filter(|m| !m.standby).collect();
        let mut order = Vec::with_capacity(self.members.len());
        if !primaries.is_empty() {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % primaries.len();
            order.extend(
                primaries.iter().cycle().skip(start).take(primaries.len()).map(|m| Arc::clone(m)),
            );
        }
        order.extend(self.members.iter().filter(|m| m.standby).cloned());
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamSettings;

    fn member(port: u16, standby: bool) -> Member {
        Member::new(
            Upstream::new(&format!("http://127.0.0.1:{port}"), UpstreamSettings::default())
                .expect("url"),
            standby,
        )
    }

    fn ports(order: &[Arc<Member>]) -> Vec<String> {
        order
            .iter()
            .map(|m| m.upstream.url().rsplit(':').next().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn primaries_rotate_and_standbys_come_last() {
        let pool = Pool::new("p", vec![member(1, false), member(2, true), member(3, false)]);
        assert_eq!(ports(&pool.candidates()), ["1", "3", "2"]);
        assert_eq!(ports(&pool.candidates()), ["3", "1", "2"]);
        assert_eq!(ports(&pool.candidates()), ["1", "3", "2"]);
        let only_standby = Pool::new("s", vec![member(9, true)]);
        assert_eq!(ports(&only_standby.candidates()), ["9"]);
    }

    #[test]
    fn in_flight_counts_follow_guards() {
        let m = Arc::new(member(1, false));
        let a = m.start();
        let b = m.start();
        assert_eq!(m.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.in_flight(), 0);
    }
}
