//! The seed's topology across hosts (network namespaces, testkit's `site`): an LB pair on a
//! keepalived VIP running the shipped keepalived.conf, two CA nodes on PostgreSQL with a
//! replica, two real puppetserver 7 compilers, real Puppet 7 agents on a client host. Every
//! single failure of one machine is made while agents run, and none may fail a run started
//! after the recovery.

use std::time::Duration;

use testkit::{
    failover::{self, Outcome},
    netns::Network,
    puppet::output_text,
    site::{Site, LB_PORT},
};

use super::bin;

fn is_lb_failure(outcome: &Outcome) -> bool {
    ["crossbar killed", "link cut", "frozen"].iter().any(|w| outcome.event.contains(w))
        && outcome.event.starts_with("lb")
}

#[test]
fn losing_any_one_machine_fails_no_agent_run() {
    assert!(
        Network::available(),
        "the e2e tests run as root, where network namespaces can be made"
    );
    let mut site =
        Site::start(bin(), &mut |m| eprintln!("site: {m}")).expect("the topology starts");
    let first = site.vip_holder().expect("an LB holds the VIP");
    let agents: Vec<_> = (1..=2).map(|i| site.agent(&format!("agent{i}.example.com"))).collect();
    for agent in &agents {
        let out = agent.bootstrap(LB_PORT);
        assert!(out.status.success(), "bootstrap through the VIP: {}", output_text(&out));
    }
    let started = std::time::Instant::now();
    let report = failover::run_all(&mut site, agents, &mut |m| eprintln!("failover: {m}"));
    let outcomes = &report.outcomes;
    eprintln!(
        "first VIP holder: {first}\n{}\n{}",
        report.timeline(started),
        failover::table(outcomes)
    );
    assert_eq!(outcomes.len(), 9, "every event ran: {outcomes:#?}");
    for outcome in outcomes {
        let event = &outcome.event;
        assert!(
            outcome.recovered_after.is_some(),
            "{event}: requests through the VIP never recovered"
        );
        assert!(outcome.runs_after > 0, "{event}: no run after it");
        assert_eq!(
            outcome.failed_after,
            0,
            "{event}: a run started after the recovery failed:\n{}",
            outcome.first_failure.clone().unwrap_or_default()
        );
        if is_lb_failure(outcome) {
            assert!(
                outcome.vip.0.is_some() && outcome.vip.0 != outcome.vip.1,
                "{event}: the VIP moved: {:?}",
                outcome.vip
            );
        }
        if event.ends_with(" back") {
            assert_eq!(outcome.vip.0, outcome.vip.1, "{event}: the VIP stays (nopreempt)");
        }
    }
    // A revocation made on ca1 is enforced by both LBs within their CRL refresh (1 s here).
    let revoked = site.agent("agent1.example.com");
    let refused = failover::revoke_and_measure(&site, &revoked).expect("revoke on ca1");
    eprintln!("revocation on ca1 enforced after: {refused:?}");
    for (lb, after) in refused {
        assert!(
            after.is_some_and(|d| d < Duration::from_secs(10)),
            "{lb} refuses the revoked agent: {after:?}"
        );
    }
}
