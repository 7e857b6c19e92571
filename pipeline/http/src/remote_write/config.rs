//! The receiver's settings (`[remote_write]`): its address, how workloads are named, and
//! every bound on what a sender may send.

use serde::{Deserialize, Serialize};

use super::auth::SenderAuth;

/// Settings of the receiver (`[remote_write]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Address to listen on (`host:port`; port 0: any free port, logged).
    #[serde(default = "d_listen")]
    pub listen: String,
    /// Labels that name the workload, first present wins.
    #[serde(default = "d_workload_labels")]
    pub workload_labels: Vec<String>,
    /// Put before every workload id (e.g. `prom:`), so resource maps can select them.
    #[serde(default)]
    pub workload_prefix: String,
    /// Largest request body accepted (bytes, compressed).
    #[serde(default = "d_max_body")]
    pub max_body_bytes: usize,
    /// Requests waiting for the pipeline before new ones are answered 503 (retry later).
    #[serde(default = "d_queue")]
    pub queue: usize,
    /// Largest decoded request (bytes): the snappy header's declared length is checked
    /// before anything is allocated.
    #[serde(default = "d_max_decoded")]
    pub max_decoded_bytes: usize,
    /// Most series in one request.
    #[serde(default = "d_max_series")]
    pub max_series: usize,
    /// Most samples in one request.
    #[serde(default = "d_max_samples")]
    pub max_samples: usize,
    /// Most bytes of decoded rows waiting for the pipeline before new requests are answered
    /// 503 (retry later), whatever their number.
    #[serde(default = "d_max_queue_bytes")]
    pub max_queue_bytes: usize,
    /// Credentials senders must present; none: every sender that reaches `listen` is taken.
    #[serde(default)]
    pub auth: Option<SenderAuth>,
}

fn d_listen() -> String {
    "127.0.0.1:9201".into()
}
fn d_workload_labels() -> Vec<String> {
    vec!["instance".into(), "job".into()]
}
fn d_max_body() -> usize {
    16 * 1024 * 1024
}
fn d_queue() -> usize {
    64
}
fn d_max_decoded() -> usize {
    64 * 1024 * 1024
}
fn d_max_series() -> usize {
    200_000
}
fn d_max_samples() -> usize {
    1_000_000
}
fn d_max_queue_bytes() -> usize {
    256 * 1024 * 1024
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        Self {
            listen: d_listen(),
            workload_labels: d_workload_labels(),
            workload_prefix: String::new(),
            max_body_bytes: d_max_body(),
            queue: d_queue(),
            max_decoded_bytes: d_max_decoded(),
            max_series: d_max_series(),
            max_samples: d_max_samples(),
            max_queue_bytes: d_max_queue_bytes(),
            auth: None,
        }
    }
}
