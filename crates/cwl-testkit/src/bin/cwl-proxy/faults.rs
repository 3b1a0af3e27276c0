//! The faults cwl-proxy injects, as posted to `/__proxy/faults` (see the crate README): what
//! each does to a request, and which requests it applies to.

use serde::{Deserialize, Serialize};

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultKind {
    /// No fault: forward (used in `script`).
    None,
    /// 400 ThrottlingException, not forwarded.
    Throttle,
    /// 503 ServiceUnavailableException, not forwarded.
    #[serde(rename = "error_503")]
    Error503,
    /// 500 InternalFailure, not forwarded.
    #[serde(rename = "error_500")]
    Error500,
    /// Connection reset (RST) after reading the request, not forwarded.
    Reset,
    /// Forwarded (so stored upstream), then connection reset without an answer.
    ResetAfterForward,
    /// 400 AccessDeniedException, not forwarded (an IAM policy without the action).
    AccessDenied,
}

impl FaultKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultKind::None => "none",
            FaultKind::Throttle => "throttle",
            FaultKind::Error503 => "error_503",
            FaultKind::Error500 => "error_500",
            FaultKind::Reset => "reset",
            FaultKind::ResetAfterForward => "reset_after_forward",
            FaultKind::AccessDenied => "access_denied",
        }
    }
}

/// What an outage does to a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutageMode {
    /// Read the request, answer nothing, close (FIN).
    #[default]
    Close,
    /// Read the request, answer nothing, reset (RST).
    Reset,
    /// Read the request, answer nothing for `hang_ms`, then close (a black hole).
    Hang,
}

/// The fault configuration, as posted to `/__proxy/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Faults {
    pub(crate) throttle_pct: f64,
    pub(crate) error_503_pct: f64,
    pub(crate) error_500_pct: f64,
    pub(crate) reset_pct: f64,
    pub(crate) reset_after_forward_pct: f64,
    /// Every non-admin request, whatever `operations` says, gets no answer.
    pub(crate) outage: bool,
    pub(crate) outage_mode: OutageMode,
    /// How long `outage_mode: hang` holds a request.
    pub(crate) hang_ms: u64,
    /// Sleep before forwarding (matching operations only).
    pub(crate) latency_ms: u64,
    /// Up to this many ms more, drawn per request: requests sent in order reach moto out of
    /// order.
    pub(crate) latency_jitter_ms: u64,
    /// Operations faults apply to; absent or null = all.
    pub(crate) operations: Option<Vec<String>>,
    /// Operations always answered AccessDeniedException, whatever else is set (an IAM policy
    /// that leaves them out).
    pub(crate) denied_operations: Vec<String>,
    /// Faults for the next matching requests, in order, before the percentages apply.
    pub(crate) script: Vec<FaultKind>,
    /// Answer matching requests with this AWS error code (HTTP 400, not forwarded), before
    /// `script` and the percentages: e.g. `ExpiredTokenException`.
    pub(crate) error_code: Option<String>,
    /// The error's message (default: AWS's usual one for the code).
    pub(crate) error_message: Option<String>,
    /// Only the next N matching requests get `error_code` (absent: until faults change).
    pub(crate) error_count: Option<u64>,
    /// Only requests signed (SigV4 `Credential=`) with this access key id get `error_code`.
    pub(crate) error_access_key_id: Option<String>,
    /// Only requests whose body contains this text get `error_code`: CloudWatch refusing a
    /// request for one event in it (`InvalidParameterException`), which the sender must find
    /// by splitting the request until the event stands alone.
    pub(crate) error_body_contains: Option<String>,
    /// A PutLogEvents that carries an entity and that moto accepts is answered with
    /// `rejectedEntityInfo` of this error type (e.g. `InvalidAttributes`), as CloudWatch
    /// answers an entity it refuses while it keeps the events.
    pub(crate) reject_entity: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            throttle_pct: 0.0,
            error_503_pct: 0.0,
            error_500_pct: 0.0,
            reset_pct: 0.0,
            reset_after_forward_pct: 0.0,
            outage: false,
            outage_mode: OutageMode::default(),
            hang_ms: 30_000,
            latency_ms: 0,
            latency_jitter_ms: 0,
            operations: None,
            denied_operations: Vec::new(),
            script: Vec::new(),
            error_code: None,
            error_message: None,
            error_count: None,
            error_access_key_id: None,
            error_body_contains: None,
            reject_entity: None,
        }
    }
}

impl Faults {
    pub(crate) fn applies_to(&self, op: &str) -> bool {
        self.operations
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| o == op))
    }
}
