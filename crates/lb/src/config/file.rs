//! `[lb]` as written in the file. Unknown keys are errors at every depth, inside inline tables
//! too: the values that may be a scalar or a table ([`OneOf`]) keep the table's own errors.

use std::{collections::BTreeMap, marker::PhantomData, net::SocketAddr, path::PathBuf};

use serde::{de, Deserialize, Deserializer};

use super::range::Bytes;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLbConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: PathBuf,
    /// `"/path"`, `{ file = "/path" }` or `{ pool = "ca", refresh = "30s", cache = "/path" }`.
    #[serde(default)]
    pub(crate) crl: Option<OneOf<FileCrlTable>>,
    #[serde(default)]
    pub(crate) admin_listen: Option<SocketAddr>,
    /// Operators who may act on the admin listener: `name token` lines.
    #[serde(default)]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// The other LBs' admin listeners, whose state the admin page shows too.
    #[serde(default)]
    pub(crate) admin_peers: Vec<String>,
    #[serde(default)]
    pub(crate) pools: BTreeMap<String, FilePool>,
    #[serde(default)]
    pub(crate) routes: Vec<FileRoute>,
    #[serde(default)]
    pub(crate) tls_reload_interval: Option<String>,
    #[serde(default)]
    pub(crate) timeouts: FileTimeouts,
    #[serde(default)]
    pub(crate) limits: FileLimits,
    #[serde(default)]
    pub(crate) max_connections: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCrlTable {
    pub(crate) file: Option<PathBuf>,
    pub(crate) pool: Option<String>,
    pub(crate) refresh: Option<String>,
    pub(crate) cache: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePool {
    pub(crate) members: Vec<FileMember>,
    #[serde(default)]
    pub(crate) balance: Option<String>,
    #[serde(default)]
    pub(crate) health: Option<FileHealth>,
    #[serde(default)]
    pub(crate) eject_on_5xx: bool,
    #[serde(default)]
    pub(crate) queue: FileQueue,
    #[serde(default)]
    pub(crate) retry_after: Option<FileRange>,
    #[serde(default)]
    pub(crate) max_body: Option<Bytes>,
    #[serde(default)]
    pub(crate) proxy_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMember {
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) standby: bool,
    #[serde(default)]
    pub(crate) max_in_flight: Option<usize>,
}

/// `health = false` (passive ejection only), `true`, or the active check's settings.
pub(crate) type FileHealth = OneOf<FileCheck>;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCheck {
    pub(crate) path: Option<String>,
    pub(crate) expect: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) rise: Option<u32>,
    pub(crate) fall: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileQueue {
    pub(crate) max: Option<usize>,
    pub(crate) timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRange {
    pub(crate) min: String,
    pub(crate) max: String,
}

/// A route: exactly one of `prefix`, `regex` or `environment`, and the pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRoute {
    pub(crate) prefix: Option<String>,
    pub(crate) regex: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) pool: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTimeouts {
    pub(crate) connect: Option<String>,
    pub(crate) response: Option<String>,
    pub(crate) backend_idle: Option<String>,
    pub(crate) handshake: Option<String>,
    pub(crate) header_read: Option<String>,
    pub(crate) idle_park: Option<String>,
    pub(crate) drain: Option<String>,
    pub(crate) body_idle: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimits {
    pub(crate) header_bytes: Option<Bytes>,
    pub(crate) headers: Option<usize>,
    pub(crate) body_min_rate: Option<Bytes>,
}

/// A value that may be a boolean, a string, or a table of its own (`crl`, `health`). serde's
/// untagged enums would swallow a typo inside the table ("did not match any variant"); this
/// keeps the table's own error, which names the unknown key.
#[derive(Debug, Clone)]
pub(crate) enum OneOf<T> {
    Bool(bool),
    Str(String),
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOf<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visit<T> {
            type Value = OneOf<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a boolean, a string or a table")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(OneOf::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOf::Str(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OneOf::Table)
            }
        }
        deserializer.deserialize_any(Visit(PhantomData))
    }
}
