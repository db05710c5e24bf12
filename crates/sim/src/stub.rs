//! The stub compiler: a **test double** for puppetserver in benchmarks of the LB itself. It
//! answers the `/puppet/v3` requests of an agent run with canned bodies of realistic size (a
//! catalog of about 100 KiB) after a configurable delay, and `/status/v1/simple` with
//! `running`. It compiles nothing; benchmarks that are about Puppet use real compilers.
//!
//! With [`JrubyModel`] it behaves like puppetserver under load for benchmarks of balancing:
//! a fixed number of JRuby slots (requests beyond them wait inside the compiler, as in
//! puppetserver's borrow queue), catalog compile times drawn from a log-normal distribution
//! (with the nodes of some environments ten times slower) and a speed factor per compiler.
//! `GET /stub/v1/stats` reports its slot usage so that a benchmark can compute utilisation.

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// What the stub answers with.
#[derive(Debug, Clone)]
pub struct StubSettings {
    /// Wait before answering a catalog request (a compile).
    pub catalog_delay: Duration,
    /// Wait before answering any other request.
    pub other_delay: Duration,
    /// Size of the canned catalog.
    pub catalog_bytes: usize,
    /// JRuby-like slots and compile times; `None`: the fixed delays above, no limit.
    pub jruby: Option<JrubyModel>,
}

/// A compiler like puppetserver: `slots` JRuby instances, compile times drawn per catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct JrubyModel {
    /// JRuby instances: requests beyond them wait for one inside the compiler.
    pub slots: usize,
    /// How fast this compiler is: 0.5 takes twice as long for everything.
    pub speed: f64,
    /// Median catalog compile time at speed 1.
    pub compile_median: Duration,
    /// The log-normal's sigma (0.6: p99 about 4× the median).
    pub compile_sigma: f64,
    /// Share of nodes whose environment compiles ten times slower (stable per certname).
    pub slow_share: f64,
}

/// The header in which the simulator numbers an agent's runs (`crossbar sim`, never a real
/// agent; not `X-Crossbar-`, which the LB strips from clients). With it the stub draws a
/// catalog's compile time from the certname and the run number instead of at random, so that
/// every LB measured in a benchmark is given the same work for the same run (common random
/// numbers): a comparison of balancers is then not swamped by the draws (a p99 of 2,600 runs
/// moves by ±15% from them alone).
pub const RUN_HEADER: &str = "x-sim-run-number";

impl JrubyModel {
    /// How long a catalog for `certname` takes, drawn from the model: for its run number `run`
    /// if the simulator gave one (the same every time), else at random.
    pub fn compile_time(&self, certname: &str, run: Option<u64>) -> Duration {
        let z = run.map_or_else(normal, |run| normal_for(certname, run));
        let base = self.compile_median.as_secs_f64() * (self.compile_sigma * z).exp();
        let environment = if slow_environment(certname, self.slow_share) { 10.0 } else { 1.0 };
        Duration::from_secs_f64(base * environment / self.speed.max(0.01))
    }
}

/// A standard normal draw.
fn normal() -> f64 {
    box_muller(fastrand::f64(), fastrand::f64())
}

/// The standard normal draw of `certname`'s run `run`: two uniforms from a hash of both.
fn normal_for(certname: &str, run: u64) -> f64 {
    let bits = crate::stable_hash((certname, run));
    let unit = |half: u64| (half as f64 + 0.5) / 4_294_967_296.0;
    box_muller(unit(bits >> 32), unit(bits & 0xffff_ffff))
}

/// Box–Muller: a standard normal from two uniforms in [0, 1).
fn box_muller(u: f64, v: f64) -> f64 {
    (-2.0 * u.max(f64::MIN_POSITIVE).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Whether `certname`'s environment is a slow one: a stable hash, so each node always is or
/// is not, as a node's environment is.
fn slow_environment(certname: &str, share: f64) -> bool {
    (crate::stable_hash(certname) % 10_000) as f64 / 10_000.0 < share
}

/// Slot usage of a modelled compiler.
#[derive(Debug, Default)]
struct Usage {
    /// Microseconds slots were held, summed over slots.
    busy_us: AtomicU64,
    /// Microseconds requests waited for a slot, summed.
    waited_us: AtomicU64,
    requests: AtomicU64,
    waiting: AtomicU64,
    /// Catalog requests, and those that carried a run number ([`RUN_HEADER`]): a benchmark
    /// checks that every LB passed the number on, or its draws were not common.
    catalogs: AtomicU64,
    numbered_catalogs: AtomicU64,
}

impl Default for StubSettings {
    fn default() -> Self {
        Self {
            catalog_delay: Duration::ZERO,
            other_delay: Duration::ZERO,
            catalog_bytes: 100 * 1024,
            jruby: None,
        }
    }
}

struct Canned {
    settings: StubSettings,
    slots: Option<tokio::sync::Semaphore>,
    usage: Usage,
    started: Instant,
    catalog: Bytes,
    node: Bytes,
    metadatas: Bytes,
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    settings: StubSettings,
    shutdown: impl Future<Output = ()>,
) {
    let canned = Arc::new(Canned {
        slots: settings.jruby.as_ref().map(|m| tokio::sync::Semaphore::new(m.slots.max(1))),
        usage: Usage::default(),
        started: Instant::now(),
        catalog: catalog(settings.catalog_bytes),
        node: node(),
        metadatas: metadatas(),
        settings,
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let canned = canned.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(canned.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    canned: Arc<Canned>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let run = request.headers().get(RUN_HEADER).and_then(|v| v.to_str().ok()?.parse().ok());
    // Read the whole request body, as a compiler would.
    let _ = request.into_body().collect().await;
    let (status, body, delay) = if path.starts_with("/status/v1/simple") {
        return Ok(respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"running"),
        ));
    } else if path == "/stub/v1/stats" {
        return Ok(respond(StatusCode::OK, "application/json", stats(&canned)));
    } else if path.starts_with("/puppet/v3/catalog/") {
        (StatusCode::OK, canned.catalog.clone(), canned.settings.catalog_delay)
    } else if path.starts_with("/puppet/v3/node/") {
        (StatusCode::OK, canned.node.clone(), canned.settings.other_delay)
    } else if path.starts_with("/puppet/v3/file_metadatas/")
        || path.starts_with("/puppet/v3/file_metadata/")
    {
        (StatusCode::OK, canned.metadatas.clone(), canned.settings.other_delay)
    } else if path.starts_with("/puppet/v3/report/") && method == Method::PUT {
        (StatusCode::OK, Bytes::from_static(b"[]"), canned.settings.other_delay)
    } else {
        let message = format!("{{\"message\":\"stub compiler: no canned answer for {path}\",\"issue_kind\":\"HANDLER_NOT_FOUND\"}}");
        return Ok(respond(StatusCode::NOT_FOUND, "application/json", Bytes::from(message)));
    };
    match (&canned.settings.jruby, &canned.slots) {
        (Some(model), Some(slots)) => {
            let certname = path.rsplit('/').next().unwrap_or_default();
            let work = if path.starts_with("/puppet/v3/catalog/") {
                canned.usage.catalogs.fetch_add(1, Ordering::Relaxed);
                if run.is_some() {
                    canned.usage.numbered_catalogs.fetch_add(1, Ordering::Relaxed);
                }
                model.compile_time(certname, run)
            } else {
                delay.div_f64(model.speed.max(0.01))
            };
            in_a_slot(&canned.usage, slots, work).await;
        }
        _ if !delay.is_zero() => tokio::time::sleep(delay).await,
        _ => {}
    }
    Ok(respond(status, "application/json", body))
}

/// Waits for a JRuby slot, then holds it for `work`.
async fn in_a_slot(usage: &Usage, slots: &tokio::sync::Semaphore, work: Duration) {
    let asked = Instant::now();
    usage.waiting.fetch_add(1, Ordering::Relaxed);
    let permit = slots.acquire().await;
    usage.waiting.fetch_sub(1, Ordering::Relaxed);
    let got = Instant::now();
    usage.waited_us.fetch_add(micros(got - asked), Ordering::Relaxed);
    tokio::time::sleep(work).await;
    usage.busy_us.fetch_add(micros(got.elapsed()), Ordering::Relaxed);
    usage.requests.fetch_add(1, Ordering::Relaxed);
    drop(permit);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn stats(canned: &Canned) -> Bytes {
    let usage = &canned.usage;
    Bytes::from(
        serde_json::json!({
            "slots": canned.settings.jruby.as_ref().map(|m| m.slots),
            "speed": canned.settings.jruby.as_ref().map(|m| m.speed),
            "uptime_s": canned.started.elapsed().as_secs_f64(),
            "busy_slot_s": usage.busy_us.load(Ordering::Relaxed) as f64 / 1e6,
            "waited_s": usage.waited_us.load(Ordering::Relaxed) as f64 / 1e6,
            "requests": usage.requests.load(Ordering::Relaxed),
            "waiting": usage.waiting.load(Ordering::Relaxed),
            "catalogs": usage.catalogs.load(Ordering::Relaxed),
            "numbered_catalogs": usage.numbered_catalogs.load(Ordering::Relaxed),
        })
        .to_string(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-puppet-version", HeaderValue::from_static("7.23.0"));
    response
}

fn node() -> Bytes {
    Bytes::from(
        serde_json::json!({"name": "agent", "environment": "production", "parameters": {"clientcert": "agent", "environment": "production"}, "classes": {}, "facts": {}})
            .to_string(),
    )
}

fn metadatas() -> Bytes {
    let entry = |path: &str| serde_json::json!({"path": path, "relative_path": ".", "links": "manage", "owner": 0, "group": 0, "mode": 420, "checksum": {"type": "ctime", "value": "{ctime}2026-11-25 12:00:00 +0000"}, "type": "directory", "destination": null});
    Bytes::from(
        serde_json::json!([entry(
            "/etc/puppetlabs/code/environments/production/modules/stdlib/lib"
        )])
        .to_string(),
    )
}

/// A catalog of about `size` bytes: `File` resources until the size is reached.
fn catalog(size: usize) -> Bytes {
    let mut resources = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while total < size {
        let resource = serde_json::json!({"type": "File", "title": format!("/etc/simulated/file-{i:05}"), "tags": ["file", "class", "simulated"], "file": "/etc/puppetlabs/code/environments/production/manifests/site.pp", "line": i, "exported": false, "parameters": {"ensure": "file", "owner": "root", "group": "root", "mode": "0644", "content": "simulated content of a managed file"}});
        total += resource.to_string().len() + 1;
        resources.push(resource);
        i += 1;
    }
    Bytes::from(
        serde_json::json!({"tags": ["settings"], "name": "agent", "version": 1_795_628_228u64, "code_id": null, "catalog_uuid": "00000000-0000-0000-0000-000000000000", "catalog_format": 1, "environment": "production", "resources": resources, "edges": [], "classes": ["settings"]})
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(slow_share: f64) -> JrubyModel {
        JrubyModel {
            slots: 2,
            speed: 1.0,
            compile_median: Duration::from_millis(100),
            compile_sigma: 0.6,
            slow_share,
        }
    }

    #[test]
    fn compile_times_are_log_normal_around_the_median_and_scale_with_speed() {
        let fast = model(0.0);
        let mut times: Vec<f64> =
            (0..4000).map(|_| fast.compile_time("node", None).as_secs_f64()).collect();
        times.sort_by(f64::total_cmp);
        let median = times[2000];
        assert!((0.09..0.11).contains(&median), "median {median}");
        let p99 = times[3960];
        assert!((0.3..0.5).contains(&p99), "p99 {p99}: a heavy tail (exp(0.6 × 2.33) ≈ 4×)");
        let half = JrubyModel { speed: 0.5, ..model(0.0) };
        let mut slow: Vec<f64> =
            (0..4000).map(|_| half.compile_time("node", None).as_secs_f64()).collect();
        slow.sort_by(f64::total_cmp);
        assert!((0.18..0.22).contains(&slow[2000]), "half speed doubles: {}", slow[2000]);
    }

    #[test]
    fn a_numbered_run_gets_the_same_compile_time_every_time_and_runs_stay_log_normal() {
        let fast = model(0.0);
        let once = fast.compile_time("agent1.example.com", Some(7));
        assert_eq!(once, fast.compile_time("agent1.example.com", Some(7)), "behind any LB");
        assert_ne!(once, fast.compile_time("agent1.example.com", Some(8)));
        assert_ne!(once, fast.compile_time("agent2.example.com", Some(7)));
        let mut times: Vec<f64> = (0..4000)
            .map(|i| fast.compile_time(&format!("agent{i}.example.com"), Some(1)).as_secs_f64())
            .collect();
        times.sort_by(f64::total_cmp);
        assert!((0.09..0.11).contains(&times[2000]), "median {}", times[2000]);
        assert!((0.3..0.5).contains(&times[3960]), "p99 {}", times[3960]);
    }

    #[test]
    fn a_share_of_nodes_is_in_a_ten_times_slower_environment_always() {
        let nodes: Vec<String> = (0..2000).map(|i| format!("agent{i:05}.example.com")).collect();
        let slow = nodes.iter().filter(|n| slow_environment(n, 0.1)).count();
        assert!((140..260).contains(&slow), "{slow} of 2000 in slow environments");
        assert!(nodes.iter().all(|n| slow_environment(n, 0.1) == slow_environment(n, 0.1)));
    }

    #[tokio::test]
    async fn requests_beyond_the_slots_wait_inside_the_compiler() {
        let usage = Usage::default();
        let slots = tokio::sync::Semaphore::new(2);
        let work = Duration::from_millis(50);
        let started = Instant::now();
        tokio::join!(
            in_a_slot(&usage, &slots, work),
            in_a_slot(&usage, &slots, work),
            in_a_slot(&usage, &slots, work)
        );
        assert!(started.elapsed() >= 2 * work, "the third waited for a slot");
        assert!(usage.waited_us.load(Ordering::Relaxed) >= 45_000);
        assert_eq!(usage.requests.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_canned_catalog_has_the_asked_size() {
        let c = catalog(100 * 1024);
        assert!((100 * 1024..110 * 1024).contains(&c.len()), "{}", c.len());
        assert!(serde_json::from_slice::<serde_json::Value>(&c).is_ok());
    }
}
