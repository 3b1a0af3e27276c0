//! Building the AWS SDK client, and finding the host facts templates need.
//!
//! Credentials come from the SDK's standard chain (environment, profile, web identity for IRSA,
//! container credentials for ECS and EKS Pod Identity, IMDSv2), resolved lazily and refreshed
//! by the SDK before they expire. The SDK's retries are turned off: [`super::request`] owns
//! the retry policy, because an SDK retry after a timeout resends a request that may already
//! have been ingested, without telling anyone.

use std::time::Duration;

use anyhow::{bail, Context};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

use crate::config::CloudWatchSinkConfig;
use crate::template::HostInfo;

/// The SDK configuration for a sink (region and endpoint from the sink's settings, else the
/// SDK's own environment: `AWS_REGION`, `AWS_ENDPOINT_URL`, profiles, IMDS).
pub async fn sdk_config(cfg: &CloudWatchSinkConfig) -> anyhow::Result<aws_config::SdkConfig> {
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
    if let Some(endpoint) = &cfg.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        bail!("no AWS region: set `region` in the sink's config, or AWS_REGION");
    }
    Ok(sdk)
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
