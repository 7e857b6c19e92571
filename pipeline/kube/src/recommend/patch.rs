//! Recommendations in Kubernetes' terms: resource quantities, a VPA recommendation object,
//! and the strategic-merge patch that sets a container's requests and limits (what
//! `kubectl patch deployment NAME --type strategic -p PATCH` applies, and what an in-place
//! resize sends for a pod).

use serde_json::{Map, Value, json};

use super::Recommendation;

/// The container resource and quantity for `value` in wfe's `unit`: `vcpu` as CPU in
/// millicores, `gib` as memory in MiB (rounded up: a request is never below the
/// recommendation); `None` for units a container has no resource for (network).
pub fn quantity(unit: &str, value: f64) -> Option<(&'static str, String)> {
    let up = |v: f64| (v.ceil() as i64).max(1);
    match unit {
        "vcpu" => Some(("cpu", format!("{}m", up(value * 1000.0)))),
        "gib" => Some(("memory", format!("{}Mi", up(value * 1024.0)))),
        _ => None,
    }
}

/// `{cpu: .., memory: ..}` of one bound of the recommendations.
fn resources(recs: &[Recommendation], bound: fn(&Recommendation) -> f64) -> Value {
    let m: Map<String, Value> = recs
        .iter()
        .filter_map(|r| quantity(&r.unit, bound(r)))
        .map(|(k, q)| (k.to_string(), Value::String(q)))
        .collect();
    Value::Object(m)
}

/// A VPA recommendation (`status.recommendation` of a VerticalPodAutoscaler) for one container.
pub fn vpa(container: &str, recs: &[Recommendation]) -> Value {
    json!({
        "containerRecommendations": [{
            "containerName": container,
            "lowerBound": resources(recs, |r| r.lower_bound),
            "target": resources(recs, |r| r.target),
            "uncappedTarget": resources(recs, |r| r.target),
            "upperBound": resources(recs, |r| r.upper_bound),
        }]
    })
}

/// The strategic-merge patch of a Deployment (or any pod template owner) that gives
/// `container` the target as its requests and the upper bound as its limits.
pub fn deployment_patch(container: &str, recs: &[Recommendation]) -> Value {
    json!({
        "spec": {"template": {"spec": {"containers": [{
            "name": container,
            "resources": {
                "requests": resources(recs, |r| r.target),
                "limits": resources(recs, |r| r.upper_bound),
            }
        }]}}}
    })
}

/// A name in the characters Kubernetes allows in object names (DNS-1123 label: lower case,
/// digits and `-`, at most 63, starting and ending with an alphanumeric).
pub fn object_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "workload".into()
    } else {
        trimmed.to_string()
    }
}
