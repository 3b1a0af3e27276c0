//! Building the AWS SDK client, and finding the host facts templates need.
//!
//! Credentials come from the SDK's standard chain (environment, profile, web identity for IRSA,
//! container credentials for ECS and EKS Pod Identity, IMDSv2), resolved lazily and refreshed
//! by the SDK before they expire. The SDK's retries are turned off: [`super::request`] owns
//! the retry policy, because an SDK retry after a timeout resends a request that may already
//! have been ingested, without telling anyone.
//!
//! A sink's `auth` table can replace the chain's defaults, as other shippers allow: a fixed key
//! pair (a static provider, named [`CONFIG_PROVIDER`] so `check` can say where the keys came
//! from), a named profile, and/or a role assumed through STS with whichever of those applies.

use std::time::Duration;

use anyhow::{bail, Context};
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;

use crate::config::CloudWatchSinkConfig;
use crate::template::HostInfo;

/// The provider name of credentials written in the config file (what `check` reports).
pub const CONFIG_PROVIDER: &str = "LogferryConfigAuth";

/// The SDK configuration for a sink (region and endpoint from the sink's settings, else the
/// SDK's own environment: `AWS_REGION`, `AWS_ENDPOINT_URL`, profiles, IMDS; credentials from
/// the sink's `auth`, else the chain).
pub async fn sdk_config(cfg: &CloudWatchSinkConfig) -> anyhow::Result<aws_config::SdkConfig> {
    require_ca_certificates()?;
    let mut loader = base_loader(cfg);
    if let Some(endpoint) = &cfg.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        bail!("no AWS region: set `region` in the sink's config, or AWS_REGION");
    }
    let Some(role) = &cfg.auth.assume_role else {
        return Ok(sdk);
    };
    // STS gets the sink's region, credentials and timeouts, but not its `endpoint`: that names
    // a CloudWatch Logs endpoint (a VPC endpoint, an emulator). STS has its own override,
    // AWS_ENDPOINT_URL_STS, which the SDK reads from a config loaded without `endpoint` (once
    // set on a loader, the endpoint takes precedence over the per-service variables).
    let sts = base_loader(cfg).load().await;
    let session_name = role
        .session_name
        .clone()
        .unwrap_or_else(default_session_name);
    let mut builder = AssumeRoleProvider::builder(role.role_arn.clone())
        .configure(&sts)
        .session_name(session_name);
    if let Some(id) = &role.external_id {
        builder = builder.external_id(id.clone());
    }
    let provider = builder.build().await;
    // The CloudWatch client's identity cache keeps the role's credentials and renews them
    // before they expire.
    Ok(sdk
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build())
}

/// The SDK's HTTPS client loads the system's CA certificates (rustls-native-certs: SSL_CERT_FILE,
/// SSL_CERT_DIR, else the distribution's bundle) when it is built, and panics when there are
/// none, whatever the endpoint: a minimal image or rootfs without `ca-certificates`. The same
/// loader, asked first, turns that into an error that says what to install.
fn require_ca_certificates() -> anyhow::Result<()> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        bail!(
            "no CA certificates found{why}: install the ca-certificates package, or point \
             SSL_CERT_FILE at a PEM bundle"
        );
    }
    Ok(())
}

/// Everything of a sink's SDK configuration but its endpoint.
fn base_loader(cfg: &CloudWatchSinkConfig) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(cfg.request_timeout)
                .build(),
        );
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &cfg.auth.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(keys) = &cfg.auth.static_keys {
        loader = loader.credentials_provider(Credentials::new(
            keys.access_key_id.expose(),
            keys.secret_access_key.expose(),
            keys.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            CONFIG_PROVIDER,
        ));
    }
    loader
}

/// `logferry-HOSTNAME`, cut to STS's 64 characters of `[\w+=,.@-]`, so CloudTrail shows which
/// host acted.
fn default_session_name() -> String {
    let mut name: String = format!("logferry-{}", hostname())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(64);
    name
}

/// A CloudWatch Logs client for `sdk`.
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(sdk)
}

fn imds_disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED")
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

async fn imds_get(path: &str) -> Option<String> {
    if imds_disabled() {
        return None;
    }
    let client = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_millis(1000))
        .max_attempts(1)
        .build();
    let fut = client.get(path);
    match tokio::time::timeout(Duration::from_secs(2), fut).await {
        Ok(Ok(v)) => Some(v.as_ref().trim().to_string()).filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// The machine's host name (what `hostname` prints).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

fn first_ipv4() -> Option<String> {
    let addrs = if_addrs::get_if_addrs().ok()?;
    addrs
        .iter()
        .filter(|a| !a.is_loopback())
        .find(|a| a.ip().is_ipv4())
        .map(|a| a.ip().to_string())
}

/// Host facts for templates; EC2 metadata (IMDSv2) is asked only when `need_imds`.
pub async fn host_info(region: &str, need_imds: bool) -> HostInfo {
    let hostname = hostname();
    let (instance_id, local_ip) = if need_imds {
        (
            imds_get("/latest/meta-data/instance-id").await,
            imds_get("/latest/meta-data/local-ipv4").await,
        )
    } else {
        (None, None)
    };
    HostInfo {
        instance_id: instance_id.unwrap_or_else(|| hostname.clone()),
        ip_address: local_ip
            .or_else(first_ipv4)
            .unwrap_or_else(|| "127.0.0.1".to_string()),
        hostname,
        region: region.to_string(),
    }
}

/// The region the SDK settled on.
pub fn region_of(sdk: &aws_config::SdkConfig) -> anyhow::Result<String> {
    sdk.region()
        .map(|r| r.to_string())
        .context("no AWS region configured")
}
