//! Decoding a remote_write request into `metrics.raw` rows, within stated bounds.
//!
//! A request is untrusted: its snappy header declares the decoded length (up to 4 GiB), and
//! its protobuf can hold any number of series and samples. The declared length is checked
//! against `max_decoded_bytes` before anything is allocated, and the series and samples
//! against `max_series` and `max_samples` before rows are built; a request over a bound is
//! refused whole as too large (413), so a sender can split it. Labels that mean something
//! to wfe itself (`split`, which picks the scaler's training steps, and `label`, the ground
//! truth of evaluations) are never taken from a sender: they are dropped and counted.

use prost::Message;
use wfe_contract::RecordBatch;
use wfe_contract::raw::RawBuilder;
use wfe_contract::schemas::labels;

use super::config::RemoteWriteConfig;

/// Labels a sender may not set (they would steer training or evaluation).
pub const RESERVED_LABELS: [&str; 2] = ["split", "label"];

/// Why a request was refused.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Not a snappy-compressed WriteRequest: 400.
    Bad(String),
    /// Over a bound of the receiver's: 413.
    TooLarge(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Bad(m) | Refusal::TooLarge(m) => m,
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

impl TimeSeries {
    /// A series of `labels` with `(timestamp ms, value)` samples, as a sender builds it.
    pub fn new(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Self {
        Self {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
        }
    }
}

/// Prometheus' staleness marker: a NaN with this bit pattern.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// What one request held.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub rows: usize,
    pub no_workload: usize,
    pub stale: usize,
    /// Labels dropped because wfe reserves their names ([`RESERVED_LABELS`]).
    pub reserved: usize,
}

/// A request as a sender puts it on the wire: protobuf, snappy block-compressed.
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    // Compressing a byte vector in memory cannot fail (snap errs only on inputs over 4 GiB,
    // which a request over `max_decoded_bytes` never reaches).
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// A decoded request as `metrics.raw` rows (None when it held no sample).
pub fn decode(
    body: &[u8],
    cfg: &RemoteWriteConfig,
) -> std::result::Result<(Option<RecordBatch>, Decoded), Refusal> {
    let declared = snap::raw::decompress_len(body)
        .map_err(|e| Refusal::Bad(format!("not snappy (block format): {e}")))?;
    if declared > cfg.max_decoded_bytes {
        return Err(Refusal::TooLarge(format!(
            "decodes to {declared} bytes, over max_decoded_bytes {}",
            cfg.max_decoded_bytes
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Refusal::Bad(format!("not snappy (block format): {e}")))?;
    let req = WriteRequest::decode(raw.as_slice())
        .map_err(|e| Refusal::Bad(format!("not a WriteRequest: {e}")))?;
    drop(raw);
    let samples: usize = req.timeseries.iter().map(|s| s.samples.len()).sum();
    if req.timeseries.len() > cfg.max_series || samples > cfg.max_samples {
        return Err(Refusal::TooLarge(format!(
            "{} series and {samples} samples, over max_series {} or max_samples {}",
            req.timeseries.len(),
            cfg.max_series,
            cfg.max_samples
        )));
    }
    let mut d = Decoded::default();
    let mut b = RawBuilder::with_capacity(samples);
    for series in &req.timeseries {
        let get = |n: &str| {
            series
                .labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.as_str())
        };
        let Some(name) = get("__name__").filter(|n| !n.is_empty()) else {
            d.no_workload += series.samples.len();
            continue;
        };
        let Some((wl, w)) = cfg
            .workload_labels
            .iter()
            .find_map(|l| get(l).filter(|v| !v.is_empty()).map(|v| (l.as_str(), v)))
        else {
            d.no_workload += series.samples.len();
            continue;
        };
        let reserved = |n: &str| RESERVED_LABELS.contains(&n);
        d.reserved += series.labels.iter().filter(|l| reserved(&l.name)).count();
        let rest = labels::format(
            series
                .labels
                .iter()
                .filter(|l| l.name != "__name__" && l.name != wl && !reserved(&l.name))
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        let w = b.workload_key(&format!("{}{w}", cfg.workload_prefix));
        let m = b.metric_key(name);
        let l = (!rest.is_empty()).then(|| b.label_key(&rest));
        for s in &series.samples {
            if s.value.to_bits() == STALE_NAN {
                d.stale += 1;
                continue;
            }
            b.push(s.timestamp, w, m, s.value, l);
        }
    }
    d.rows = b.len();
    if b.is_empty() {
        return Ok((None, d));
    }
    b.finish().map(|b| (Some(b), d)).map_err(bad)
}

fn bad(e: impl std::fmt::Display) -> Refusal {
    Refusal::Bad(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wfe_contract::columns::{DictStrings, f64s, timestamps};

    fn body(series: Vec<TimeSeries>) -> Vec<u8> {
        let raw = WriteRequest { timeseries: series }.encode_to_vec();
        snap::raw::Encoder::new().compress_vec(&raw).unwrap()
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        let samples: Vec<(i64, f64)> = samples.iter().map(|&(v, t)| (t, v)).collect();
        TimeSeries::new(labels, &samples)
    }

    #[test]
    fn samples_become_rows_by_the_label_mapping() {
        let cfg = RemoteWriteConfig {
            workload_prefix: "prom:".into(),
            ..Default::default()
        };
        let b = body(vec![
            series(
                &[
                    ("__name__", "up"),
                    ("instance", "web-1:9100"),
                    ("job", "node"),
                ],
                &[(1.0, 1000), (1.0, 2000)],
            ),
            series(&[("__name__", "load1"), ("job", "batch")], &[(0.5, 1000)]),
            series(&[("instance", "x")], &[(3.0, 1000)]),
            series(
                &[("__name__", "up"), ("instance", "web-2")],
                &[(f64::from_bits(STALE_NAN), 3000)],
            ),
        ]);
        let (batch, d) = decode(&b, &cfg).unwrap();
        let batch = batch.unwrap();
        assert_eq!(
            d,
            Decoded {
                rows: 3,
                no_workload: 1,
                stale: 1,
                reserved: 0,
            }
        );
        let w = DictStrings::new(&batch, "workload").unwrap();
        let m = DictStrings::new(&batch, "metric").unwrap();
        let l = DictStrings::new(&batch, "labels").unwrap();
        let got: Vec<_> = (0..3)
            .map(|r| (w.get(r).unwrap(), m.get(r).unwrap(), l.get(r)))
            .collect();
        assert_eq!(
            got,
            [
                ("prom:web-1:9100", "up", Some("job=node")),
                ("prom:web-1:9100", "up", Some("job=node")),
                ("prom:batch", "load1", None),
            ]
        );
        assert_eq!(
            timestamps(&batch, "event_time").unwrap().values().to_vec(),
            [1000, 2000, 1000]
        );
        assert_eq!(
            f64s(&batch, "value").unwrap().values().to_vec(),
            [1.0, 1.0, 0.5]
        );
    }

    #[test]
    fn bad_bodies_are_named_not_a_panic() {
        let cfg = RemoteWriteConfig::default();
        assert!(
            decode(b"plain text", &cfg)
                .unwrap_err()
                .message()
                .starts_with("not snappy")
        );
        let junk = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(
            decode(&junk, &cfg)
                .unwrap_err()
                .message()
                .starts_with("not a WriteRequest")
        );
        assert_eq!(decode(&body(vec![]), &cfg).unwrap().0, None);
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_it_is_allocated() {
        let cfg = RemoteWriteConfig::default();
        // A snappy block header declaring ~4 GiB (varint 0xFFFFFFFF) and a few bytes after.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x61];
        match decode(&bomb, &cfg) {
            Err(Refusal::TooLarge(m)) => assert!(m.contains("4294967295"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Real content that decodes past the bound: 1 MiB of zeros compresses to ~48 KiB.
        let small = RemoteWriteConfig {
            max_decoded_bytes: 1 << 19,
            ..Default::default()
        };
        let zeros = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 1 << 20])
            .unwrap();
        assert!(matches!(decode(&zeros, &small), Err(Refusal::TooLarge(_))));
    }

    #[test]
    fn series_and_samples_per_request_are_bounded() {
        let cfg = RemoteWriteConfig {
            max_series: 2,
            max_samples: 5,
            ..Default::default()
        };
        let one = |i: i64, n: usize| {
            let name = format!("w{i}");
            let samples: Vec<(f64, i64)> = (0..n).map(|k| (1.0, k as i64 * 1000)).collect();
            series(&[("__name__", "up"), ("instance", name.as_str())], &samples)
        };
        assert!(decode(&body(vec![one(1, 2), one(2, 3)]), &cfg).is_ok());
        let too_many_series = body(vec![one(1, 1), one(2, 1), one(3, 1)]);
        assert!(matches!(
            decode(&too_many_series, &cfg),
            Err(Refusal::TooLarge(_))
        ));
        let too_many_samples = body(vec![one(1, 6)]);
        let e = decode(&too_many_samples, &cfg).unwrap_err();
        assert!(e.message().contains("6 samples"), "{e:?}");
    }

    #[test]
    fn a_sender_cannot_set_split_or_label() {
        let cfg = RemoteWriteConfig::default();
        let b = body(vec![series(
            &[
                ("__name__", "up"),
                ("instance", "w"),
                ("split", "train"),
                ("label", "1"),
                ("zone", "a"),
            ],
            &[(1.0, 1000)],
        )]);
        let (batch, d) = decode(&b, &cfg).unwrap();
        assert_eq!(d.reserved, 2);
        let batch = batch.unwrap();
        let l = DictStrings::new(&batch, "labels").unwrap();
        assert_eq!(l.get(0), Some("zone=a"));
    }
}
