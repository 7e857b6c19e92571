use std::io::Write;
use std::path::Path;

use wfe_contract::columns::{DictStrings, f64s};
use wfe_contract::schemas::labels;

use super::*;

pub(crate) fn shared_data() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = std::env::var_os("WFE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../../../shared/data"));
    assert!(
        data.join("smd").is_dir(),
        "shared data not found at {} (set WFE_DATA)",
        data.display()
    );
    data
}

fn drain(src: &mut FileSource, ctx: &mut Context) -> Result<Vec<RecordBatch>> {
    let mut out = vec![];
    while let Some(b) = src.next_batch(ctx)? {
        out.push(b);
    }
    Ok(out)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

#[test]
fn reads_an_smd_machine_with_labels() {
    let mut cfg = SourceConfig::new(shared_data().join("smd"));
    cfg.only = vec!["machine-1-6".into()];
    let mut src = FileSource::open(&[cfg], true).unwrap();
    let mut ctx = Context::new("ingest");
    let first = src.next_batch(&mut ctx).unwrap().unwrap();
    assert_eq!(first.num_rows(), CHUNK_ROWS * 38);
    let w = DictStrings::new(&first, "workload").unwrap();
    let m = DictStrings::new(&first, "metric").unwrap();
    let l = DictStrings::new(&first, "labels").unwrap();
    assert_eq!(w.get(0), Some("machine-1-6"));
    assert_eq!(
        (m.get(0), m.get(37), m.get(38)),
        (Some("m00"), Some("m37"), Some("m00"))
    );
    assert_eq!(labels::get(l.get(0).unwrap(), "split"), Some("train"));
    // First value of the file, as in its second line.
    assert!((f64s(&first, "value").unwrap().value(0) - 0.061728).abs() < 1e-9);
    let rest = drain(&mut src, &mut ctx).unwrap();
    let total: usize = rest.iter().map(|b| b.num_rows()).sum::<usize>() + first.num_rows();
    // Every row holds 38 values; the test split carries labels, some of them 1.
    assert_eq!(total % 38, 0);
    let anomalous = rest
        .iter()
        .map(|b| {
            let l = DictStrings::new(b, "labels").unwrap();
            (0..b.num_rows())
                .filter(|&i| l.get(i).and_then(|s| labels::get(s, "label")) == Some("1"))
                .count()
        })
        .sum::<usize>();
    assert!(anomalous > 0);
    assert_eq!(ctx.rejected_total(), 0);
}

#[test]
fn merges_files_by_event_time() {
    let mut cfg = SourceConfig::new(shared_data().join("asd"));
    cfg.only = vec!["omi-1".into(), "omi-2".into()];
    let mut src = FileSource::open(&[cfg], true).unwrap();
    let mut ctx = Context::new("ingest");
    let batches = drain(&mut src, &mut ctx).unwrap();
    let firsts: Vec<i64> = batches
        .iter()
        .map(|b| {
            wfe_contract::columns::timestamps(b, "event_time")
                .unwrap()
                .value(0)
        })
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] <= w[1]),
        "chunks are not in event-time order"
    );
    let names: std::collections::BTreeSet<String> = batches
        .iter()
        .map(|b| {
            DictStrings::new(b, "workload")
                .unwrap()
                .get(0)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names.len(), 2);
}

#[test]
fn bad_rows_are_counted_and_skipped_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "w.csv",
        "timestamp,cpu,mem\n1,0.5,0.1\n2,abc,0.2\n3,0.7\nxx,0.1,0.1\n5,,0.3\n6,0.9,0.4\n",
    );
    let mut src = FileSource::open(&[SourceConfig::new(&p)], false).unwrap();
    let mut ctx = Context::new("ingest");
    let rows: usize = drain(&mut src, &mut ctx)
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    // Good values: 2 (line 2) + 1 (line 3, mem) + 1 (line 6, mem) + 2 (line 7) = 6.
    assert_eq!(rows, 6);
    let c = ctx.counters();
    assert_eq!(c["rejected.non_numeric"], 1);
    assert_eq!(c["rejected.column_count"], 1);
    assert_eq!(c["rejected.bad_timestamp"], 1);
    assert_eq!(c["rejected.empty_value"], 1);
}

#[test]
fn strict_stops_at_the_first_bad_value_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "w.csv",
        "timestamp,cpu,mem\n1,0.5,0.1\n2,0.3,oops\n",
    );
    let mut src = FileSource::open(&[SourceConfig::new(&p)], true).unwrap();
    let err = drain(&mut src, &mut Context::new("ingest"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("w.csv:3:3 (mem)") && err.contains("`oops` is not a number"),
        "{err}"
    );
}

#[test]
fn missing_and_empty_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileSource::open(&[SourceConfig::new(dir.path().join("nope.csv"))], false)
        .err()
        .unwrap();
    assert!(err.to_string().contains("nope.csv"), "{err}");

    let p = write(dir.path(), "empty.csv", "");
    let mut src = FileSource::open(&[SourceConfig::new(&p)], false).unwrap();
    let err = drain(&mut src, &mut Context::new("ingest"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("empty.csv") && err.contains("empty file"),
        "{err}"
    );
}

#[test]
fn long_csv_keeps_workloads_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "long.csv",
        "timestamp,workload,metric,value\n1000,a,cpu,0.5\n1000,b,cpu,0.25\n1060,a,mem,NaN\n",
    );
    let mut cfg = SourceConfig::new(&p);
    cfg.timestamp_unit = "ms".into();
    let mut src = FileSource::open(&[cfg], true).unwrap();
    let batches = drain(&mut src, &mut Context::new("ingest")).unwrap();
    let b = &batches[0];
    assert_eq!(b.num_rows(), 3);
    let w = DictStrings::new(b, "workload").unwrap();
    assert_eq!((w.get(0), w.get(1)), (Some("a"), Some("b")));
    // NaN passes ingest: normalise is where it is rejected and counted.
    assert!(f64s(b, "value").unwrap().value(2).is_nan());
    assert_eq!(
        wfe_contract::columns::timestamps(b, "event_time")
            .unwrap()
            .value(0),
        1000
    );
}

#[test]
fn a_sources_labels_reach_every_row_and_a_rows_own_label_wins() {
    let dir = tempfile::tempdir().unwrap();
    // Long CSV rows carry no labels; the SMD file carries split and label per row.
    let p = write(
        dir.path(),
        "long.csv",
        "timestamp,workload,metric,value\n1000,a,cpu,0.5\n1000,b,cpu,0.25\n",
    );
    let mut long = SourceConfig::new(&p);
    long.timestamp_unit = "ms".into();
    long.labels = [("env.instance_type", "m5.large"), ("env.kernel", "6.1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut smd = SourceConfig::new(shared_data().join("smd"));
    smd.only = vec!["machine-1-6".into()];
    smd.labels = [("env.instance_type", "c5.xlarge"), ("split", "overridden?")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut src = FileSource::open(&[long, smd], true).unwrap();
    let batches = drain(&mut src, &mut Context::new("ingest")).unwrap();
    let mut seen = (0, 0);
    for b in &batches {
        let w = DictStrings::new(b, "workload").unwrap();
        let l = DictStrings::new(b, "labels").unwrap();
        for i in 0..b.num_rows() {
            let set = l.get(i).expect("every row labelled");
            if w.get(i) == Some("machine-1-6") {
                seen.1 += 1;
                assert_eq!(labels::get(set, "env.instance_type"), Some("c5.xlarge"));
                // The file's own split label is kept.
                assert!(
                    matches!(labels::get(set, "split"), Some("train" | "test")),
                    "{set}"
                );
            } else {
                seen.0 += 1;
                assert_eq!(set, "env.instance_type=m5.large,env.kernel=6.1");
            }
        }
    }
    assert_eq!(seen.0, 2);
    assert!(seen.1 > 1000 * 38);
}

#[test]
fn parquet_and_ipc_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "w.csv", "timestamp,cpu\n1,0.5\n2,0.6\n");
    let mut src = FileSource::open(&[SourceConfig::new(&csv)], true).unwrap();
    let batch = src
        .next_batch(&mut Context::new("ingest"))
        .unwrap()
        .unwrap();

    let pq = dir.path().join("w2.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(File::create(&pq).unwrap(), batch.schema(), None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let ipc = dir.path().join("w3.arrow");
    let mut w =
        arrow_ipc::writer::FileWriter::try_new(File::create(&ipc).unwrap(), &batch.schema())
            .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();

    for p in [pq, ipc] {
        let mut src = FileSource::open(&[SourceConfig::new(&p)], true).unwrap();
        let got = src
            .next_batch(&mut Context::new("ingest"))
            .unwrap()
            .unwrap();
        assert_eq!(got.num_rows(), 2);
        assert_eq!(
            f64s(&got, "value").unwrap().values(),
            f64s(&batch, "value").unwrap().values()
        );
    }

    let bad = write(dir.path(), "bad.parquet", "not parquet at all");
    let mut src = FileSource::open(&[SourceConfig::new(&bad)], false).unwrap();
    let err = drain(&mut src, &mut Context::new("ingest"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.parquet") && err.contains("Parquet"),
        "{err}"
    );
}

#[test]
fn quoted_fields_and_crlf_lines_parse() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "q.csv",
        "timestamp,workload,metric,value\r\n1000,\"web,eu\",cpu,0.5\r\n\r\n1060,\"web,eu\",\"cpu\",\"0.75\"\r\n",
    );
    let mut cfg = SourceConfig::new(&p);
    cfg.timestamp_unit = "ms".into();
    let mut src = FileSource::open(&[cfg], true).unwrap();
    let b = drain(&mut src, &mut Context::new("ingest"))
        .unwrap()
        .remove(0);
    let w = DictStrings::new(&b, "workload").unwrap();
    assert_eq!(
        (b.num_rows(), w.get(0), w.get(1)),
        (2, Some("web,eu"), Some("web,eu"))
    );
    assert_eq!(f64s(&b, "value").unwrap().values(), &[0.5, 0.75]);
}

#[test]
fn the_decimal_shortcut_equals_a_full_parse() {
    let cases = [
        "0.061728",
        "0",
        "12",
        "-3.5",
        "0.1",
        "0.3",
        "123456789012345",
        "1234567890.12345",
        "1e-5",
        "NaN",
        "inf",
        "-0.0",
        ".5",
        "5.",
        "0.000000000000001",
        "9007199254740993",
        "1.7976931348623157",
        "abc",
        "1.2.3",
        "-",
    ];
    for c in cases {
        let full = fast_float2::parse::<f64, _>(c.as_bytes()).ok();
        let fast = super::formats::parse_f64_for_tests(c.as_bytes());
        match (full, fast) {
            (Some(a), Some(b)) => assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{c}: {a} vs {b}"
            ),
            (None, None) => {}
            other => panic!("{c}: {other:?}"),
        }
    }
}

#[test]
fn an_only_name_without_a_file_is_an_error_naming_it() {
    let mut cfg = SourceConfig::new(shared_data().join("smd"));
    cfg.only = vec!["machine-1-6".into(), "machine-9-9".into()];
    let e = expand(&[cfg.clone()]).unwrap_err().to_string();
    assert!(e.contains("machine-9-9") && e.contains("smd"), "{e}");
    cfg.only = vec!["machine-1-6".into()];
    assert_eq!(expand(&[cfg]).unwrap().len(), 1);
}

#[test]
fn long_names_stay_whole_and_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let a = "tenant-payments-prod-us-east-1-api-server-a";
    let b = "tenant-payments-prod-us-east-1-api-server-b";
    let metric = "container_cpu_usage_seconds_total_rate_5m_per_core";
    let p = write(
        dir.path(),
        "long.csv",
        &format!("timestamp,workload,metric,value\n1000,{a},{metric},1\n1000,{b},{metric},2\n"),
    );
    let mut cfg = SourceConfig::new(&p);
    cfg.timestamp_unit = "ms".into();
    let mut src = FileSource::open(&[cfg], true).unwrap();
    let batches = drain(&mut src, &mut Context::new("ingest")).unwrap();
    let w = DictStrings::new(&batches[0], "workload").unwrap();
    let m = DictStrings::new(&batches[0], "metric").unwrap();
    assert_eq!((w.get(0), w.get(1)), (Some(a), Some(b)));
    assert_eq!(m.get(0), Some(metric));
}

#[test]
fn a_long_file_grouped_by_series_comes_out_in_time_order() {
    // All of a/cpu, then a/mem, then b/cpu: in file order every series after the first
    // would be late for normalise.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("timestamp,workload,metric,value\n");
    for (w, m) in [("a", "cpu"), ("a", "mem"), ("b", "cpu")] {
        for t in 0..50 {
            text.push_str(&format!("{},{w},{m},{t}\n", 1_700_000_000 + 60 * t));
        }
    }
    let p = write(dir.path(), "export.csv", &text);
    let mut src = FileSource::open(&[SourceConfig::new(&p)], true).unwrap();
    let batches = drain(&mut src, &mut Context::new("ingest")).unwrap();
    let ts: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            wfe_contract::columns::timestamps(b, "event_time")
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ts.len(), 150);
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn unusable_timestamps_in_parquet_are_rejected_rows_not_the_epoch() {
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("timestamp", DataType::Int64, true),
        Field::new("workload", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    // Seconds, then nanoseconds read as seconds (overflows x1000), then a null.
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![
                Some(1_700_000_000),
                Some(1_700_000_000_000_000_000),
                None,
                Some(1_700_000_060),
            ])),
            Arc::new(StringArray::from(vec!["w"; 4])),
            Arc::new(StringArray::from(vec!["cpu"; 4])),
            Arc::new(arrow_array::Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])),
        ],
    )
    .unwrap();
    let pq = dir.path().join("t.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(File::create(&pq).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let mut src = FileSource::open(&[SourceConfig::new(&pq)], false).unwrap();
    let mut ctx = Context::new("ingest");
    let got = drain(&mut src, &mut ctx).unwrap();
    let ts: Vec<i64> = got
        .iter()
        .flat_map(|b| {
            wfe_contract::columns::timestamps(b, "event_time")
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ts, [1_700_000_000_000, 1_700_000_060_000]);
    assert_eq!(ctx.counters()["rejected.bad_timestamp"], 2);
    // Strict: the first one stops the file, naming the row.
    let mut src = FileSource::open(&[SourceConfig::new(&pq)], true).unwrap();
    let err = drain(&mut src, &mut Context::new("ingest"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("t.parquet: row 2"), "{err}");
}

#[test]
fn float_timestamps_that_do_not_fit_are_rejected() {
    assert_eq!(chunk::float_ms(1.5, 1000), Some(1500));
    assert_eq!(chunk::float_ms(1e300, 1000), None);
    assert_eq!(chunk::float_ms(-9.3e18, 1), None);
    assert_eq!(chunk::float_ms(f64::NAN, 1), None);
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "f.csv",
        "timestamp,cpu\n1e300,1\n1700000000.5,2\n",
    );
    let mut src = FileSource::open(&[SourceConfig::new(&p)], false).unwrap();
    let mut ctx = Context::new("ingest");
    let got = drain(&mut src, &mut ctx).unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert_eq!(ctx.counters()["rejected.bad_timestamp"], 1);
}

#[test]
fn an_ipc_file_with_a_hostile_body_length_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "w.csv", "timestamp,cpu\n1,0.5\n2,0.6\n");
    let mut src = FileSource::open(&[SourceConfig::new(&csv)], true).unwrap();
    let batch = src
        .next_batch(&mut Context::new("ingest"))
        .unwrap()
        .unwrap();
    let mut bytes = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    // The record batch message's bodyLength, found after the schema message, made huge.
    let schema_len = i32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let at = 8 + schema_len;
    let meta_len = i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    let meta = &bytes[at + 8..at + 8 + meta_len];
    let body = arrow_ipc::root_as_message(meta).unwrap().bodyLength();
    let pos = (0..meta_len - 8)
        .find(|&i| meta[i..i + 8] == body.to_le_bytes())
        .unwrap();
    bytes[at + 8 + pos..at + 16 + pos].copy_from_slice(&(1i64 << 45).to_le_bytes());
    let p = dir.path().join("hostile.arrow");
    std::fs::write(&p, &bytes).unwrap();
    let mut src = FileSource::open(&[SourceConfig::new(&p)], false).unwrap();
    let err = drain(&mut src, &mut Context::new("ingest"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hostile.arrow") && err.contains("body length"),
        "{err}"
    );
}
