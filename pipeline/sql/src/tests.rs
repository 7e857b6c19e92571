use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, StringArray};
use arrow_schema::{DataType, Field, Schema};

use super::*;

fn batch(workloads: &[&str], values: &[f64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("workload", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("step", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(workloads.to_vec())),
            Arc::new(Float64Array::from(values.to_vec())),
            Arc::new(Int64Array::from_iter_values(0..workloads.len() as i64)),
        ],
    )
    .unwrap()
}

/// A store folder with a Parquet output and an IPC stream recording of two batches.
fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(&["a", "b", "a"], &[1.0, 2.0, 4.0]);
    let f = File::create(dir.path().join("metrics.norm.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, b.schema(), None).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    let f = File::create(dir.path().join("anomalies-recorded.arrows")).unwrap();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(f, &b.schema()).unwrap();
    w.write(&batch(&["a"], &[10.0])).unwrap();
    w.write(&batch(&["b", "c"], &[20.0, 30.0])).unwrap();
    w.finish().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a table").unwrap();
    dir
}

#[test]
fn files_become_tables_named_after_them() {
    let dir = store();
    let c = Catalog::open(&[dir.path().to_path_buf()]).unwrap();
    let names: Vec<&str> = c.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["anomalies_recorded", "metrics_norm"]);
    assert_eq!(
        table_name(Path::new("x/9lives.parquet")).as_deref(),
        Some("_9lives")
    );
    assert_eq!(table_name(Path::new("x/notes.txt")), None);
}

#[test]
fn a_join_over_parquet_and_a_recording_aggregates_both() {
    let dir = store();
    let c = Catalog::open(&[dir.path().to_path_buf()]).unwrap();
    let out = c
        .query(
            "SELECT m.workload, SUM(m.value) AS total, MAX(r.value) AS recorded \
             FROM metrics_norm m JOIN anomalies_recorded r ON m.workload = r.workload \
             GROUP BY m.workload ORDER BY m.workload",
        )
        .unwrap();
    let csv = Catalog::render(&out, Format::Csv).unwrap();
    assert_eq!(csv, "workload,total,recorded\na,5.0,10.0\nb,2.0,20.0\n");
    let json = Catalog::render(&out, Format::Json).unwrap();
    assert_eq!(json.lines().count(), 2);
    assert!(
        json.starts_with("{\"workload\":\"a\",\"total\":5.0"),
        "{json}"
    );
    let table = Catalog::render(&out, Format::Table).unwrap();
    assert!(table.contains("| workload | total | recorded |"), "{table}");
    // The store describes itself.
    let tables = c.query("SHOW TABLES").unwrap();
    let listed = Catalog::render(&tables, Format::Csv).unwrap();
    assert!(listed.contains("metrics_norm") && listed.contains("anomalies_recorded"));
}

#[test]
fn bad_queries_and_stores_are_errors_that_say_what() {
    let dir = store();
    let c = Catalog::open(&[dir.path().to_path_buf()]).unwrap();
    let e = c.query("SELECT * FROM nope").unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    let e = c.query("SELEC 1").unwrap_err().to_string();
    assert!(e.contains("SELEC"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = Catalog::open(&[empty.path().to_path_buf()])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no .parquet or .arrows files"), "{e}");
    // The same table name from two places is refused rather than one silently shadowing the other.
    let e = Catalog::open(&[
        dir.path().to_path_buf(),
        dir.path().join("metrics.norm.parquet"),
    ])
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("table `metrics_norm` is already"), "{e}");
    // A corrupt Parquet file is named.
    std::fs::write(dir.path().join("broken.parquet"), "PAR1 not really").unwrap();
    let e = Catalog::open(&[dir.path().to_path_buf()])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("broken.parquet"), "{e}");
    assert!("yaml".parse::<Format>().is_err());
}
