//! The topics: their names, versions and what each holds. A leaf module: the schemas'
//! definition, check and description all name topics through it.

/// Metadata key holding a schema's topic name.
pub const META_NAME: &str = "wfe.schema.name";
/// Metadata key holding a schema's version.
pub const META_VERSION: &str = "wfe.schema.version";

/// The topics of the pipeline. The string form is the Kafka topic name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[strum(serialize_all = "lowercase")]
pub enum Topic {
    #[strum(serialize = "metrics.raw")]
    MetricsRaw,
    #[strum(serialize = "metrics.norm")]
    MetricsNorm,
    Fingerprints,
    Profiles,
    Anomalies,
    Forecasts,
    Decisions,
    Actions,
    Recommendations,
    Migrations,
}

impl Topic {
    pub const ALL: [Topic; 10] = [
        Topic::MetricsRaw,
        Topic::MetricsNorm,
        Topic::Fingerprints,
        Topic::Profiles,
        Topic::Anomalies,
        Topic::Forecasts,
        Topic::Decisions,
        Topic::Actions,
        Topic::Recommendations,
        Topic::Migrations,
    ];

    /// The topic name, as used for Kafka topics and output files.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Parses a topic name as printed by [`Topic::name`].
    pub fn from_name(name: &str) -> Option<Topic> {
        name.parse().ok()
    }

    /// The current schema version of this topic.
    pub fn version(self) -> u32 {
        match self {
            // 2: allocation_metrics, allocation. 3: environment, profile.
            Topic::Fingerprints => 3,
            // 2: spot_count (a mix of spot and on-demand).
            Topic::Decisions => 2,
            _ => 1,
        }
    }

    /// Whether the topic is a table (one row per key matters: the newest), which Kafka keeps
    /// compacted, rather than a stream of events.
    pub fn is_table(self) -> bool {
        self == Topic::Profiles
    }

    /// One line saying what the topic holds, for the generated description.
    pub fn summary(self) -> &'static str {
        match self {
            Topic::MetricsRaw => {
                "Samples as ingested, one row per (time, workload, metric). Not yet checked or aligned."
            }
            Topic::MetricsNorm => {
                "Samples on a fixed step per workload, deduplicated, gap-filled or flagged, scaled per metric with parameters learned from history."
            }
            Topic::Fingerprints => {
                "A behavioural vector per workload and window, its nearest known workloads, and its allocation (borrowed from those neighbours while the workload is new)."
            }
            Topic::Profiles => {
                "The fleet's table of workloads: each workload's latest profile, metric set, environment and allocation, keyed by workload on a compacted topic (a reader keeps the newest row per workload). Every fingerprint instance reads all of it, so neighbours are searched across the whole fleet, not one instance's partitions."
            }
            Topic::Anomalies => {
                "One row per opened, updated and closed anomaly segment, with the metrics ranked by contribution."
            }
            Topic::Forecasts => {
                "Quantile forecasts per workload, resource and horizon, with the model that made them and its validation score."
            }
            Topic::Decisions => {
                "Capacity decisions per workload: tier, instance type, count, expected cost, risk and the reason."
            }
            Topic::Actions => {
                "Every provider API call the actuator made or would make, with parameters, mode and outcome."
            }
            Topic::Recommendations => {
                "Container sizes per workload and resource at each forecast issuance, in the shape of a Kubernetes VPA recommendation (lower bound, target, upper bound): the request covers a quantile of the forecasts up to a horizon, plus a margin."
            }
            Topic::Migrations => {
                "Moves planned against contention between co-located workloads: at a forecast issuance, a host whose workloads' summed demand may pass its capacity (the chance above a bound, their correlation from history counted) gets the fewest moves that bring it within the bound, each to a host of the workload's environment that stays within it."
            }
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
