//! The config file: `[ca]` and `[lb]`, each optional, each checked by its crate.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

/// `crossbar.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    ca: Option<ca::config::FileCaConfig>,
    lb: Option<lb::FileLbConfig>,
    #[serde(default)]
    log: FileLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    /// A tracing filter, e.g. `info` or `info,crossbar::access=warn`; RUST_LOG overrides it.
    pub level: Option<String>,
    /// `text` (the default) or `json`: one JSON object per line, for log shippers.
    pub format: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub ca: Option<ca::config::CaConfig>,
    pub lb: Option<lb::LbConfig>,
    pub log_level: String,
    pub log_format: LogFormat,
}

/// Reads and checks `path`; every error names the file and the key at fault.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid", path.display()))?;
    if file.ca.is_none() && file.lb.is_none() {
        bail!("config file {} declares no role: add a [ca] or an [lb] section", path.display());
    }
    let ca = file
        .ca
        .map(ca::config::CaConfig::try_from)
        .transpose()
        .with_context(|| format!("in {}", path.display()))?;
    let lb = file
        .lb
        .map(lb::LbConfig::try_from)
        .transpose()
        .with_context(|| format!("in {}", path.display()))?;
    let log_format = match file.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            bail!("in {}: [log] format = {other:?}: use \"text\" or \"json\"", path.display())
        }
    };
    Ok(Config { ca, lb, log_level: file.log.level.unwrap_or_else(|| "info".into()), log_format })
}
