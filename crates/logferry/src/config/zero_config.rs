//! The configuration used when `logferry run` is given no file.

use std::path::Path;

use super::diag::{ConfigError, ConfigErrors};
use super::{parse, Config};

/// The configuration used when `logferry run` is given no file: the host journal to the group
/// named by `LOGFERRY_LOG_GROUP`, one stream per instance (EC2 instance id, else host name), as
/// the old journalctl | awslogs chain did with one environment variable. `LOGFERRY_LOG_STREAM`,
/// `LOGFERRY_DATA_DIR`, `LOGFERRY_START` (`end`, `beginning`, or an RFC 3339 time) and
/// `LOGFERRY_FORMAT` adjust it.
pub fn zero_config(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let text = include_str!("zero_config.toml");
    if env("LOGFERRY_LOG_GROUP").is_none_or(|g| g.is_empty()) {
        return Err(ConfigErrors(vec![ConfigError::whole_file(
            Path::new("(no config file)"),
            "LOGFERRY_LOG_GROUP",
            "give --config FILE, or set LOGFERRY_LOG_GROUP to ship the host journal there",
        )]));
    }
    parse(Path::new("(built-in zero config)"), text, env)
}
