//! Which pool serves a request: a pure function of its path, query and `User-Agent`.

use std::sync::Arc;

use regex::Regex;

/// How a route recognises its requests.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// The path starts with this.
    Prefix(String),
    /// The path matches this expression.
    Regex(Regex),
    /// The `environment` query parameter equals this (a canary pool of compilers).
    Environment(String),
    /// A status request of the CA: `/status/v1/simple/ca`, or any `/status/` request of the
    /// `puppetserver ca` CLI (it reads the `ca` service's version to choose bulk signing).
    CaStatus,
}

/// What routing looks at in a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
}

/// The `User-Agent` of the `puppetserver ca` CLI (every version).
const CA_CLI_AGENT: &str = "PuppetserverCaCli";

/// One routing rule.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) matcher: Matcher,
    pub(crate) pool: String,
}

/// Routes in order; the first match wins, else the fallback pool.
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    fallback: String,
    /// Each route's log label, made once (the last is the fallback's).
    labels: Vec<Arc<str>>,
}

/// The pool for CA traffic and the pool for everything else when no routes are configured.
pub(crate) const CA_POOL: &str = "ca";
pub(crate) const COMPILER_POOL: &str = "compilers";

impl RouteTable {
    /// The seed's routing: `/puppet-ca/` and the Puppet 3 `/<env>/certificate…` forms always go
    /// to the CA pool (a configured route never captures CA traffic), then configured routes in
    /// order, then the compilers.
    pub(crate) fn with_defaults(configured: Vec<Route>) -> Self {
        let mut routes =
            vec![Route { matcher: Matcher::Prefix("/puppet-ca/".into()), pool: CA_POOL.into() }];
        // Built from a literal: cannot fail.
        if let Ok(legacy) = Regex::new("^/[^/]+/certificate") {
            routes.push(Route { matcher: Matcher::Regex(legacy), pool: CA_POOL.into() });
        }
        routes.push(Route { matcher: Matcher::CaStatus, pool: CA_POOL.into() });
        routes.extend(configured);
        let labels = routes
            .iter()
            .map(|r| Arc::from(r.matcher.to_string()))
            .chain([Arc::from("default")])
            .collect();
        Self { routes, fallback: COMPILER_POOL.into(), labels }
    }

    /// The pool for a request to `path` with `query`.
    pub(crate) fn pool_for(&self, path: &str, query: Option<&str>) -> &str {
        self.route_for(Target { path, query, user_agent: None }).1
    }

    /// The matched route's index (`None`: the fallback) and its pool.
    pub(crate) fn route_for(&self, target: Target<'_>) -> (Option<usize>, &str) {
        match self.routes.iter().position(|route| route.matcher.matches(target)) {
            Some(i) => (Some(i), self.routes[i].pool.as_str()),
            None => (None, self.fallback.as_str()),
        }
    }

    /// A route's label for logs: its matcher, or `default`.
    pub(crate) fn label(&self, index: Option<usize>) -> Arc<str> {
        let i = index.unwrap_or(self.routes.len()).min(self.labels.len().saturating_sub(1));
        self.labels.get(i).cloned().unwrap_or_else(|| Arc::from("default"))
    }

    /// Every pool a route can send to (for configuration checks).
    pub(crate) fn pools(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.pool.as_str()).chain(std::iter::once(self.fallback.as_str()))
    }

    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub(crate) fn fallback(&self) -> &str {
        &self.fallback
    }
}

impl Matcher {
    fn matches(&self, target: Target<'_>) -> bool {
        let Target { path, query, user_agent } = target;
        match self {
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Self::Regex(re) => re.is_match(path),
            Self::Environment(env) => {
                query.is_some_and(|q| environment_of(q) == Some(env.as_str()))
            }
            Self::CaStatus => {
                path == "/status/v1/simple/ca"
                    || (path.starts_with("/status/")
                        && user_agent.is_some_and(|ua| ua.starts_with(CA_CLI_AGENT)))
            }
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Prefix(p) => write!(f, "prefix {p}"),
            Self::Regex(r) => write!(f, "regex {}", r.as_str()),
            Self::Environment(e) => write!(f, "environment={e}"),
            Self::CaStatus => f.write_str("CA status (/status/v1/simple/ca, or the CA CLI)"),
        }
    }
}

/// The `environment` query parameter. Environment names are `[a-z0-9_]`, so no decoding is
/// needed to compare them.
fn environment_of(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| pair.strip_prefix("environment="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_follow_the_seed() {
        let table = RouteTable::with_defaults(vec![]);
        let cases = [
            ("/puppet-ca/v1/certificate/ca", None, "ca"),
            ("/puppet-ca/v1/certificate_request/agent1", None, "ca"),
            ("/production/certificate/ca", None, "ca"),
            ("/production/certificate_revocation_list/ca", None, "ca"),
            ("/production/certificate_status/x", None, "ca"),
            ("/puppet/v3/catalog/agent1", Some("environment=production"), "compilers"),
            ("/puppet/v3/node/agent1", None, "compilers"),
            ("/status/v1/simple", None, "compilers"),
            ("/", None, "compilers"),
            ("/puppet-cax/v1/certificate", None, "compilers"),
            ("/production/catalog/agent1", None, "compilers"),
        ];
        for (path, query, pool) in cases {
            assert_eq!(table.pool_for(path, query), pool, "{path}");
        }
    }

    #[test]
    fn the_ca_clis_status_requests_go_to_the_ca() {
        let table = RouteTable::with_defaults(vec![]);
        let route = |path, user_agent| table.route_for(Target { path, query: None, user_agent }).1;
        assert_eq!(route("/status/v1/services", Some("PuppetserverCaCli")), "ca");
        assert_eq!(route("/status/v1/simple/ca", None), "ca");
        assert_eq!(route("/status/v1/services", Some("Puppet/8.10.0 Ruby/3.3")), "compilers");
        assert_eq!(route("/status/v1/simple/server", Some("Puppet/8.10.0")), "compilers");
        assert_eq!(route("/puppet/v3/node/x", Some("PuppetserverCaCli")), "compilers");
    }

    #[test]
    fn routes_have_labels_for_the_log() {
        let table = RouteTable::with_defaults(vec![]);
        let target = |path| Target { path, query: None, user_agent: None };
        let (index, pool) = table.route_for(target("/puppet-ca/v1/certificate/ca"));
        assert_eq!((&*table.label(index), pool), ("prefix /puppet-ca/", "ca"));
        let (index, pool) = table.route_for(target("/puppet/v3/node/x"));
        assert_eq!((&*table.label(index), pool), ("default", "compilers"));
    }

    #[test]
    fn configured_routes_come_after_the_ca_routes() {
        let table = RouteTable::with_defaults(vec![
            Route { matcher: Matcher::Environment("canary".into()), pool: "canary".into() },
            Route { matcher: Matcher::Prefix("/puppet/v3/file_".into()), pool: "files".into() },
        ]);
        let cases = [
            ("/puppet/v3/catalog/a", Some("environment=canary"), "canary"),
            ("/puppet/v3/catalog/a", Some("x=1&environment=canary&y=2"), "canary"),
            ("/puppet/v3/catalog/a", Some("environment=canary2"), "compilers"),
            ("/puppet/v3/catalog/a", Some("configured_environment=canary"), "compilers"),
            ("/puppet/v3/file_metadatas/plugins", Some("environment=production"), "files"),
            ("/puppet-ca/v1/certificate/ca", None, "ca"),
            ("/puppet-ca/v1/certificate/ca", Some("environment=canary"), "ca"),
            ("/canary/certificate/ca", Some("environment=canary"), "ca"),
        ];
        for (path, query, pool) in cases {
            assert_eq!(table.pool_for(path, query), pool, "{path}?{query:?}");
        }
    }
}
