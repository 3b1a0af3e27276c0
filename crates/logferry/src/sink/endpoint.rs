//! Where a sink's requests go, as `logferry check` reports it: the CloudWatch Logs endpoint
//! and the HTTP proxy in between.
//!
//! Neither is decided here. The endpoint comes from the SDK's own endpoint rules
//! (`aws_sdk_cloudwatchlogs`'s `DefaultResolver`), fed the values the SDK's standard chain
//! settled on: the region, `use_fips` (`AWS_USE_FIPS_ENDPOINT` or the profile's
//! `use_fips_endpoint`), `use_dual_stack` (`AWS_USE_DUALSTACK_ENDPOINT`,
//! `use_dualstack_endpoint`) and an endpoint override (the sink's `endpoint`, else
//! `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`, else `AWS_ENDPOINT_URL`). The proxy comes from the same
//! matcher the SDK's HTTP client builds from the environment (hyper-util's
//! `Matcher::from_env`: `HTTPS_PROXY` for https endpoints, `HTTP_PROXY` for http ones, each
//! with its lowercase form, `ALL_PROXY`, and `NO_PROXY`). A proxy URL may carry credentials
//! (`http://user:password@proxy:3128`): only its scheme, host and port are ever shown.

use aws_sdk_cloudwatchlogs::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use hyper_util::client::proxy::matcher::Matcher;

/// The endpoint URL requests for this sink go to.
pub async fn resolve(
    sdk: &aws_config::SdkConfig,
    configured: Option<&str>,
) -> anyhow::Result<String> {
    // The service-specific variable wins over AWS_ENDPOINT_URL (which the SDK config already
    // holds), unless the sink's own `endpoint` is set (a client setting beats both).
    let endpoint = match configured {
        Some(e) => Some(e.to_string()),
        None => std::env::var("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| sdk.endpoint_url().map(str::to_string)),
    };
    let params = Params::builder()
        .set_region(sdk.region().map(|r| r.to_string()))
        .set_use_fips(sdk.use_fips())
        .set_use_dual_stack(sdk.use_dual_stack())
        .set_endpoint(endpoint)
        .build()?;
    let resolved = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(resolved.url().to_string())
}

/// The proxy the SDK's HTTP client will use for `url` given the environment: `None` when
/// none applies (unset, or `NO_PROXY` matches the host). Shown as `scheme://host:port`.
pub fn proxy_for(url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let intercept = Matcher::from_env().intercept(&uri)?;
    Some(without_userinfo(intercept.uri()))
}

/// `scheme://host:port` of a proxy URI, dropping any `user:password@`.
fn without_userinfo(uri: &hyper::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("?");
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// The names of the proxy variables that are set (never their values), for messages.
pub fn proxy_variables_set() -> Vec<&'static str> {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ]
    .into_iter()
    .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_shown_without_its_credentials() {
        let uri: hyper::Uri = "http://alice:s3cret@proxy.corp:3128".parse().expect("uri");
        assert_eq!(without_userinfo(&uri), "http://proxy.corp:3128");
        let uri: hyper::Uri = "https://proxy.corp".parse().expect("uri");
        assert_eq!(without_userinfo(&uri), "https://proxy.corp");
    }

    async fn endpoint_with(fips: bool, dual_stack: bool, region: &str) -> String {
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new(region.to_string()))
            .use_fips(fips)
            .use_dual_stack(dual_stack)
            .build();
        resolve(&sdk, None).await.expect("resolves")
    }

    #[tokio::test]
    async fn fips_and_dual_stack_choose_the_documented_hosts() {
        assert_eq!(
            endpoint_with(false, false, "eu-west-1").await,
            "https://logs.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint_with(true, false, "us-east-1").await,
            "https://logs-fips.us-east-1.amazonaws.com"
        );
        assert_eq!(
            endpoint_with(false, true, "us-east-1").await,
            "https://logs.us-east-1.api.aws"
        );
    }

    #[tokio::test]
    async fn a_configured_endpoint_wins_and_excludes_fips_and_dual_stack() {
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
        assert_eq!(
            resolve(&sdk, Some("http://127.0.0.1:5000"))
                .await
                .expect("resolves"),
            "http://127.0.0.1:5000"
        );
        for (fips, dual) in [(true, false), (false, true)] {
            let sdk = aws_config::SdkConfig::builder()
                .region(aws_config::Region::new("us-east-1"))
                .use_fips(fips)
                .use_dual_stack(dual)
                .build();
            let err = resolve(&sdk, Some("http://127.0.0.1:5000"))
                .await
                .expect_err("the SDK refuses the combination");
            assert!(err.to_string().contains("custom endpoint"), "{err}");
        }
    }
}
