//! A trigger's `metadata` (KEDA hands it to every call as `scalerMetadata`), read into a
//! checked [`Query`]: which workload and resource, which forecast quantile, how far ahead, and
//! how much one replica serves. Unknown keys are errors, as `deny_unknown_fields` makes them
//! in wfe's configs: a misspelt `podStartupSecond` would otherwise silently use the default.
//!
//! KEDA sends the trigger's whole metadata: its own connection keys too ([`KEDA_KEYS`],
//! passed over), and for a key `xFromEnv` the value of the environment variable it names,
//! under that name (read here as `x`).

use std::collections::HashMap;

use crate::error::ScalerError;

/// Most metadata entries a trigger may carry, and the longest value (bytes): whatever a
/// client sends, a call reads a bounded amount.
pub const MAX_ENTRIES: usize = 32;
pub const MAX_VALUE_BYTES: usize = 256;

/// The keys a trigger may set.
pub const KEYS: [&str; 7] = [
    "workload",
    "resource",
    "quantile",
    "podStartupSeconds",
    "targetPerReplica",
    "activationValue",
    "floor",
];

/// Keys KEDA itself reads from an external trigger's metadata (where and how to connect).
pub const KEDA_KEYS: [&str; 3] = ["scalerAddress", "enableTLS", "unsafeSsl"];

/// Whether the value KEDA gets may fall below the demand observed last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// Never below the newest observed demand: a forecast that undershoots what the workload
    /// uses now must not scale it in (predictive scaling takes the larger of both).
    Actual,
    /// The forecast alone.
    None,
}

/// What a trigger leaves out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// Forecast quantile level (the job's tier-select `sla_quantile`: what its decisions cover).
    pub quantile: f64,
    /// Seconds a new replica takes to serve.
    pub startup_s: i64,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            quantile: 0.9,
            startup_s: 60,
        }
    }
}

/// One trigger's request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub workload: String,
    /// A resource of the job's `[[resources]]` (default `cpu`).
    pub resource: String,
    /// Forecast quantile level: the value at the nearest level at or above it, as the
    /// tier-select stage reads its SLA quantile.
    pub quantile: f64,
    /// The forecast used is the one of the shortest horizon at or past this.
    pub startup_s: i64,
    /// Demand one replica serves, in the resource's unit: KEDA's target, so the replicas
    /// HPA sets are `ceil(value / targetPerReplica)`.
    pub target_per_replica: f64,
    /// Active (scale from zero) when the value passes this.
    pub activation: f64,
    pub floor: Floor,
}

impl Query {
    /// Reads `metadata`; `defaults` fill what it leaves out.
    pub fn parse(
        metadata: &HashMap<String, String>,
        defaults: &Defaults,
    ) -> Result<Self, ScalerError> {
        if metadata.len() > MAX_ENTRIES {
            return Err(ScalerError::metadata(
                "*",
                format!("{} entries, at most {MAX_ENTRIES}", metadata.len()),
            ));
        }
        let mut known: HashMap<&str, &str> = HashMap::new();
        for (k, v) in metadata {
            if KEDA_KEYS.contains(&k.as_str()) {
                continue;
            }
            let key = k.strip_suffix("FromEnv").unwrap_or(k);
            let Some(key) = KEYS.iter().copied().find(|x| *x == key) else {
                let k: String = k.chars().take(64).collect();
                return Err(ScalerError::metadata(
                    &k,
                    format!("unknown key (known: {})", KEYS.join(", ")),
                ));
            };
            if v.len() > MAX_VALUE_BYTES {
                return Err(ScalerError::metadata(
                    k,
                    format!("{} bytes, at most {MAX_VALUE_BYTES}", v.len()),
                ));
            }
            if known.insert(key, v).is_some() {
                return Err(ScalerError::metadata(
                    key,
                    format!("given twice (`{key}` and `{key}FromEnv`)"),
                ));
            }
        }
        let get = |k: &str| known.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let workload = get("workload")
            .ok_or_else(|| ScalerError::metadata("workload", "required"))?
            .to_string();
        let quantile = number(get("quantile"), "quantile", defaults.quantile)?;
        if !(quantile > 0.0 && quantile < 1.0) {
            return Err(ScalerError::metadata(
                "quantile",
                format!("must be in (0, 1), got {quantile}"),
            ));
        }
        let startup = number(
            get("podStartupSeconds"),
            "podStartupSeconds",
            defaults.startup_s as f64,
        )?;
        if !(0.0..=86_400.0).contains(&startup) {
            return Err(ScalerError::metadata(
                "podStartupSeconds",
                format!("must be 0 to 86400, got {startup}"),
            ));
        }
        let target = number(get("targetPerReplica"), "targetPerReplica", f64::NAN)?;
        if target.is_nan() {
            return Err(ScalerError::metadata(
                "targetPerReplica",
                "required: the demand one replica serves, in the resource's unit",
            ));
        }
        if target <= 0.0 {
            return Err(ScalerError::metadata(
                "targetPerReplica",
                format!("must be above 0, got {target}"),
            ));
        }
        let activation = number(get("activationValue"), "activationValue", 0.0)?;
        if activation < 0.0 {
            return Err(ScalerError::metadata(
                "activationValue",
                format!("must be 0 or more, got {activation}"),
            ));
        }
        let floor = match get("floor").unwrap_or("actual") {
            "actual" => Floor::Actual,
            "none" => Floor::None,
            other => {
                return Err(ScalerError::metadata(
                    "floor",
                    format!("`{other}`: `actual` or `none`"),
                ));
            }
        };
        Ok(Self {
            workload,
            resource: get("resource").unwrap_or("cpu").to_string(),
            quantile,
            startup_s: startup.ceil() as i64,
            target_per_replica: target,
            activation,
            floor,
        })
    }

    /// The metric's name: one per workload and resource, in the characters Kubernetes
    /// allows in a metric name (KEDA puts `sN-` before it).
    pub fn metric_name(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| match c.to_ascii_lowercase() {
                    c @ ('a'..='z' | '0'..='9' | '-') => c,
                    _ => '-',
                })
                .collect()
        };
        format!("wfe-{}-{}", clean(&self.resource), clean(&self.workload))
    }
}

/// A finite number from `value`, or `default` when absent.
fn number(value: Option<&str>, key: &str, default: f64) -> Result<f64, ScalerError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(ScalerError::metadata(
            key,
            format!("`{v}` is not a finite number"),
        )),
    }
}

#[cfg(test)]
mod tests;
