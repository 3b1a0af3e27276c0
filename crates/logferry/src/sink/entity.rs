//! CloudWatch's `entity` for container logs: which workload a PutLogEvents request's events
//! come from, so that CloudWatch's "Explore related" links them to the workload's metrics and
//! traces.
//!
//! The rule: an event gets an entity only when the sink knows the cluster (`cluster_name`, or
//! `CLUSTER_NAME`) and the event names its pod and namespace (`kubernetes_logs`); everything
//! else is sent as before, without one. The mapping is the one AWS documents in "How to add
//! related information to telemetry" and the CloudWatch agent sends for EKS and Kubernetes:
//!
//! - keyAttributes: `Type` = `Service`, `Name` = the workload, `Environment` =
//!   `eks:CLUSTER/NAMESPACE` (or `k8s:CLUSTER/NAMESPACE` off EKS);
//! - attributes: `PlatformType` (`AWS::EKS` or `K8s`), `EKS.Cluster` (or `K8s.Cluster`),
//!   `K8s.Namespace`, `K8s.Workload`, `K8s.Node` (when known) and `AWS.ServiceNameSource` =
//!   `K8sWorkload`.
//!
//! These names and values are the ones the CloudWatch agent's EKS entity integration test
//! expects (amazon-cloudwatch-agent-test) and its entity attribute constants define (`AWS::EKS`,
//! `K8s`, `EKS.Cluster`, `K8s.Cluster`); the `k8s:` prefix of `Environment` off EKS follows
//! the `eks:` pattern and was not seen in a source.
//!
//! The workload is derived from the pod name ([`workload_of`]), not from labels: it is the
//! owner (Deployment, StatefulSet, DaemonSet, CronJob) the agent names, it needs no Kubernetes
//! API, and an `app` label may span several workloads.
//!
//! An entity is part of the sink's request key, so events of different workloads never share
//! a request. CloudWatch may refuse an entity (`rejectedEntityInfo`) while accepting the
//! events: that is counted, never a reason to hold or drop them.

use crate::event::{names, Event};
use crate::format::push_json_str;

/// Where the cluster runs: decides the `Environment` prefix and the cluster attribute's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Amazon EKS (`eks:`, `EKS.Cluster`, `AWS::EKS`).
    Eks,
    /// Any other Kubernetes (`k8s:`, `K8s.Cluster`, `K8s`).
    Kubernetes,
}

/// The sink's entity settings: present only when a cluster name is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityConfig {
    /// The cluster's name (EKS: 1 to 100 letters, digits, `-` and `_`).
    pub cluster: String,
    /// Where it runs.
    pub platform: Platform,
}

/// Why a cluster name cannot be used, if it cannot.
pub fn cluster_name_problem(name: &str) -> Option<&'static str> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || name.len() > 100 {
        Some("must be 1 to 100 characters")
    } else if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("must be letters, digits, `-` and `_`, starting with a letter or digit")
    } else {
        None
    }
}

/// The characters Kubernetes uses for generated name suffixes (no vowels, no 0, 1, 3).
fn is_generated(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The workload a pod belongs to, from its name: `web-7d4b9c8f6-x2kzq` (Deployment) → `web`,
/// `db-2` (StatefulSet) → `db`, `agent-x2kzq` (DaemonSet, Job) → `agent`,
/// `report-28954320-x2kzq` (CronJob) → `report`; any other name is its own workload (static
/// pods, bare pods). A heuristic: a Deployment named like `web-rhythm` (a word with no vowel)
/// loses its last word.
pub fn workload_of(pod: &str) -> &str {
    let Some((head, last)) = pod.rsplit_once('-') else {
        return pod;
    };
    if head.is_empty() {
        return pod;
    }
    if is_digits(last) {
        return head;
    }
    if last.len() != 5 || !is_generated(last) {
        return pod;
    }
    match head.rsplit_once('-') {
        Some((owner, mid))
            if !owner.is_empty()
                && ((is_generated(mid) && (6..=10).contains(&mid.len()))
                    || (is_digits(mid) && mid.len() >= 8)) =>
        {
            owner
        }
        _ => head,
    }
}

/// Renders the entities of events, remembering the last one (a chunk's events mostly come from
/// one pod, so most events cost a comparison).
#[derive(Debug)]
pub struct EntityMapper {
    config: EntityConfig,
    last_key: String,
    last: Option<std::sync::Arc<str>>,
    key_buf: String,
}

impl EntityMapper {
    /// A mapper for `config`.
    pub fn new(config: EntityConfig) -> Self {
        EntityMapper {
            config,
            last_key: String::new(),
            last: None,
            key_buf: String::new(),
        }
    }

    /// `event`'s entity as the PutLogEvents body's `"entity":{...}` member, or `None` when it
    /// names no pod and namespace.
    pub fn entity(&mut self, event: &Event) -> Option<std::sync::Arc<str>> {
        let text = |name: &str| {
            event
                .field(name)
                .map(|v| String::from_utf8_lossy(v))
                .filter(|v| !v.is_empty())
        };
        let namespace = text(names::NAMESPACE)?;
        let pod = text(names::POD)?;
        let node = text(names::NODE);
        self.key_buf.clear();
        for part in [&*namespace, &*pod, node.as_deref().unwrap_or("")] {
            self.key_buf.push_str(part);
            self.key_buf.push('\n');
        }
        if self.last.is_none() || self.key_buf != self.last_key {
            let rendered = render(&self.config, &namespace, workload_of(&pod), node.as_deref());
            self.last = Some(rendered.into());
            std::mem::swap(&mut self.last_key, &mut self.key_buf);
        }
        self.last.clone()
    }
}

/// The `"entity":{...}` member for a workload.
pub fn render(
    config: &EntityConfig,
    namespace: &str,
    workload: &str,
    node: Option<&str>,
) -> String {
    let (prefix, cluster_key, platform) = match config.platform {
        Platform::Eks => ("eks", "EKS.Cluster", "AWS::EKS"),
        Platform::Kubernetes => ("k8s", "K8s.Cluster", "K8s"),
    };
    let environment = format!("{prefix}:{}/{namespace}", config.cluster);
    let mut out = String::with_capacity(384);
    let members = |out: &mut String, pairs: &[(&str, &str)]| {
        out.push('{');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, k);
            out.push(':');
            push_json_str(out, v);
        }
        out.push('}');
    };
    out.push_str("\"entity\":{\"keyAttributes\":");
    members(
        &mut out,
        &[
            ("Type", "Service"),
            ("Name", workload),
            ("Environment", &environment),
        ],
    );
    out.push_str(",\"attributes\":");
    let mut attributes = vec![
        ("PlatformType", platform),
        (cluster_key, config.cluster.as_str()),
        ("K8s.Namespace", namespace),
        ("K8s.Workload", workload),
    ];
    if let Some(node) = node {
        attributes.push(("K8s.Node", node));
    }
    attributes.push(("AWS.ServiceNameSource", "K8sWorkload"));
    members(&mut out, &attributes);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_strips_what_controllers_append_to_pod_names() {
        for (pod, workload) in [
            ("web-7d4b9c8f6-x2kzq", "web"),
            ("shop-api-5c9f8b7d4-p8wqz", "shop-api"),
            ("api-2x4b6c-x2kzq", "api"),
            ("db-0", "db"),
            ("kafka-broker-12", "kafka-broker"),
            ("fluent-bit-x7k2p", "fluent-bit"),
            ("report-28954320-x2kzq", "report"),
            // Not generated: their own workload.
            (
                "kube-apiserver-ip-10-0-0-1.ec2.internal",
                "kube-apiserver-ip-10-0-0-1.ec2.internal",
            ),
            ("standalone", "standalone"),
            ("log-agent", "log-agent"),
            ("-0", "-0"),
            // `agent` has vowels, so it is a name, not a ReplicaSet hash.
            ("log-agent-x7k2p", "log-agent"),
        ] {
            assert_eq!(workload_of(pod), workload, "{pod}");
        }
    }

    fn parsed(config: &EntityConfig, ns: &str, pod: &str, node: Option<&str>) -> serde_json::Value {
        let member = render(config, ns, workload_of(pod), node);
        serde_json::from_str::<serde_json::Value>(&format!("{{{member}}}")).expect("json")["entity"]
            .clone()
    }

    #[test]
    fn eks_entity_names_the_service_its_environment_and_where_it_runs() {
        let eks = EntityConfig {
            cluster: "prod-1".into(),
            platform: Platform::Eks,
        };
        assert_eq!(
            parsed(&eks, "shop", "web-7d4b9c8f6-x2kzq", Some("ip-10-0-1-2")),
            serde_json::json!({
                "keyAttributes": {"Type": "Service", "Name": "web", "Environment": "eks:prod-1/shop"},
                "attributes": {
                    "PlatformType": "AWS::EKS",
                    "EKS.Cluster": "prod-1",
                    "K8s.Namespace": "shop",
                    "K8s.Workload": "web",
                    "K8s.Node": "ip-10-0-1-2",
                    "AWS.ServiceNameSource": "K8sWorkload",
                },
            })
        );
    }

    #[test]
    fn plain_kubernetes_entity_uses_k8s_names_and_omits_an_unknown_node() {
        let k8s = EntityConfig {
            cluster: "lab".into(),
            platform: Platform::Kubernetes,
        };
        let e = parsed(&k8s, "ops", "db-1", None);
        assert_eq!(e["keyAttributes"]["Environment"], "k8s:lab/ops");
        assert_eq!(e["attributes"]["PlatformType"], "K8s");
        assert_eq!(e["attributes"]["K8s.Cluster"], "lab");
        assert_eq!(e["attributes"]["K8s.Workload"], "db");
        assert!(e["attributes"].get("K8s.Node").is_none(), "{e}");
        assert!(e["attributes"].get("EKS.Cluster").is_none(), "{e}");
    }

    #[test]
    fn events_without_pod_and_namespace_get_no_entity() {
        use crate::event::FieldName;
        let mut mapper = EntityMapper::new(EntityConfig {
            cluster: "c".into(),
            platform: Platform::Eks,
        });
        let event = |fields: &[(&'static str, &'static str)]| Event {
            timestamp_ms: 0,
            message: bytes::Bytes::from_static(b"m"),
            priority: None,
            common: None,
            fields: fields
                .iter()
                .map(|(k, v)| {
                    (
                        FieldName::Static(k),
                        bytes::Bytes::from_static(v.as_bytes()),
                    )
                })
                .collect(),
            source: "s".into(),
            truncated_bytes: 0,
            ack: crate::ack::Ack::none(),
            origin: 0,
            header: None,
            merged: None,
        };
        assert!(mapper.entity(&event(&[(names::POD, "web-0")])).is_none());
        let a = mapper.entity(&event(&[(names::NAMESPACE, "n"), (names::POD, "web-0")]));
        let b = mapper.entity(&event(&[(names::NAMESPACE, "n"), (names::POD, "api-0")]));
        let a2 = mapper.entity(&event(&[(names::NAMESPACE, "n"), (names::POD, "web-1")]));
        assert!(
            a.as_deref().is_some_and(|e| e.contains("\"Name\":\"web\"")),
            "{a:?}"
        );
        assert!(
            b.as_deref().is_some_and(|e| e.contains("\"Name\":\"api\"")),
            "{b:?}"
        );
        assert_eq!(a, a2, "pods of one workload share its entity");
    }

    #[test]
    fn cluster_names_are_checked_like_eks_checks_them() {
        assert_eq!(cluster_name_problem("prod_eu-1"), None);
        assert!(cluster_name_problem("").is_some());
        assert!(cluster_name_problem("-x").is_some());
        assert!(cluster_name_problem("a/b").is_some());
        assert!(cluster_name_problem(&"a".repeat(101)).is_some());
    }
}
