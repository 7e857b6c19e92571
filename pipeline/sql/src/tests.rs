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

/// `rows` of (workload, event time ms).
fn timed(rows: &[(&str, i64)]) -> RecordBatch {
    use arrow_array::TimestampMillisecondArray;
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "event_time",
            DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("workload", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(
                TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

const DAY: i64 = 86_400_000;

#[test]
fn retention_per_tenant_hides_expired_rows_and_compaction_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let now = 100 * DAY;
    // Two tenants and an untouched workload, one row per day for 10 days up to now.
    let mut rows = Vec::new();
    for d in 0..10 {
        for w in ["acme-web", "acme-db", "beta-api", "other"] {
            rows.push((w, now - d * DAY));
        }
    }
    let b = timed(&rows);
    let f = File::create(dir.path().join("anomalies.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, b.schema(), None).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    let f = File::create(dir.path().join("decisions-rec.arrows")).unwrap();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(f, &b.schema()).unwrap();
    w.write(&b).unwrap();
    w.finish().unwrap();
    // A table without a time column is left alone.
    let plain = batch(&["acme-web"], &[1.0]);
    let f = File::create(dir.path().join("plain.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, plain.schema(), None).unwrap();
    w.write(&plain).unwrap();
    w.close().unwrap();

    let rules = [
        RetentionRule {
            prefix: "acme-".into(),
            keep: "7d".into(),
        },
        RetentionRule {
            prefix: "acme-db".into(),
            keep: "2d".into(),
        },
        RetentionRule {
            prefix: "beta-".into(),
            keep: "36h".into(),
        },
    ];
    let retention = Retention::new(&rules).unwrap();
    let store = [dir.path().to_path_buf()];
    let count = |c: &Catalog, table: &str| -> Vec<(String, i64)> {
        let out = c
            .query(&format!(
                "SELECT workload, count(*) AS n FROM {table} GROUP BY workload ORDER BY workload"
            ))
            .unwrap();
        let text = Catalog::render(&out, Format::Csv).unwrap();
        text.lines()
            .skip(1)
            .map(|l| {
                let (w, n) = l.split_once(',').unwrap();
                (w.to_string(), n.parse().unwrap())
            })
            .collect()
    };
    // Days 0..=7 for acme (7 days back inclusive), 0..=2 for acme-db, 0..=1 for beta (36 h).
    let want = vec![
        ("acme-db".to_string(), 3),
        ("acme-web".to_string(), 8),
        ("beta-api".to_string(), 2),
        ("other".to_string(), 10),
    ];
    let c = Catalog::open_with(&store, &retention, now).unwrap();
    assert_eq!(count(&c, "anomalies"), want);
    assert_eq!(count(&c, "decisions_rec"), want);
    // Before compaction the files still hold everything.
    let all = Catalog::open(&store).unwrap();
    assert_eq!(
        count(&all, "anomalies").iter().map(|r| r.1).sum::<i64>(),
        40
    );

    let done = c.apply_retention().unwrap();
    let mut tables: Vec<(&str, usize, usize)> = done
        .iter()
        .map(|d| (d.table.as_str(), d.rows_before, d.rows_after))
        .collect();
    tables.sort();
    assert_eq!(tables, [("anomalies", 40, 23), ("decisions_rec", 40, 23)]);
    // Reopened without rules: the files now hold only what was retained; nothing left over.
    let after = Catalog::open(&store).unwrap();
    assert_eq!(count(&after, "anomalies"), want);
    assert_eq!(count(&after, "decisions_rec"), want);
    assert_eq!(after.query("SELECT * FROM plain").unwrap()[0].num_rows(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "retention-tmp"))
        .collect();
    assert!(leftovers.is_empty());
    // A second pass has nothing to do.
    let again = Catalog::open_with(&store, &retention, now).unwrap();
    assert!(again.apply_retention().unwrap().is_empty());
}

#[test]
fn queries_are_read_only() {
    let dir = store();
    let c = Catalog::open(&[dir.path().to_path_buf()]).unwrap();
    let target = dir.path().join("copied.csv");
    let statements = [
        format!(
            "COPY (SELECT * FROM metrics_norm) TO '{}'",
            target.display()
        ),
        "CREATE TABLE t AS SELECT 1 AS x".to_string(),
        "CREATE VIEW v AS SELECT * FROM metrics_norm".to_string(),
        "DROP TABLE metrics_norm".to_string(),
        "INSERT INTO metrics_norm SELECT * FROM metrics_norm".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
    ];
    for sql in &statements {
        let e = c.query(sql).unwrap_err().to_string();
        assert!(e.contains("read-only"), "{sql}: {e}");
    }
    assert!(!target.exists(), "COPY wrote {}", target.display());
    // The tables are all still there, and reads still work.
    let out = c.query("SELECT COUNT(*) AS n FROM metrics_norm").unwrap();
    assert_eq!(Catalog::render(&out, Format::Csv).unwrap(), "n\n3\n");
}

/// Writes `batches` as a Parquet file or an IPC stream (by `path`'s extension).
fn write_file(path: &Path, batches: &[RecordBatch]) {
    let f = File::create(path).unwrap();
    let schema = batches[0].schema();
    if path.extension().is_some_and(|e| e == "parquet") {
        let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
        batches.iter().for_each(|b| w.write(b).unwrap());
        w.close().unwrap();
    } else {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(f, &schema).unwrap();
        batches.iter().for_each(|b| w.write(b).unwrap());
        w.finish().unwrap();
    }
}

#[test]
fn a_rolled_output_is_one_table_over_its_finished_parts_and_retention_goes_part_by_part() {
    let dir = tempfile::tempdir().unwrap();
    let now = 100 * DAY;
    for ext in ["parquet", "arrows"] {
        let rolled = dir.path().join(format!("forecasts-{ext}.{ext}"));
        std::fs::create_dir(&rolled).unwrap();
        // Part 0: all expired; part 1: half; part 2: none; the open part is a hidden partial.
        let old = timed(&[("acme-web", now - 9 * DAY), ("acme-db", now - 8 * DAY)]);
        let half = timed(&[("acme-web", now - 9 * DAY), ("acme-web", now)]);
        let new = timed(&[("acme-web", now), ("other", now - 30 * DAY)]);
        write_file(&rolled.join(format!("part-00000000.{ext}")), &[old]);
        write_file(&rolled.join(format!("part-00000001.{ext}")), &[half]);
        write_file(&rolled.join(format!("part-00000002.{ext}")), &[new]);
        std::fs::write(
            rolled.join(format!(".part-00000003.{ext}.partial")),
            b"PAR1 torn",
        )
        .unwrap();
    }
    // A live source that has not closed a part yet: not a table, not an error.
    std::fs::create_dir(dir.path().join("actions.parquet")).unwrap();
    let store = [dir.path().to_path_buf()];
    let c = Catalog::open(&store).unwrap();
    let names: Vec<&str> = c.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["forecasts_arrows", "forecasts_parquet"]);
    for t in ["forecasts_arrows", "forecasts_parquet"] {
        let n = c.query(&format!("SELECT count(*) FROM {t}")).unwrap();
        let text = Catalog::render(&n, Format::Csv).unwrap();
        assert_eq!(text.lines().nth(1), Some("6"), "{t}: {text}");
    }
    // Passed on its own, the folder is the table; an empty one is an error that says why.
    let one = Catalog::open(&[dir.path().join("forecasts-parquet.parquet")]).unwrap();
    assert_eq!(one.tables()[0].name, "forecasts_parquet");
    let err = Catalog::open(&[dir.path().join("actions.parquet")])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no finished part yet") && err.contains("actions.parquet"),
        "{err}"
    );

    let rules = [RetentionRule {
        prefix: "acme-".into(),
        keep: "7d".into(),
    }];
    let c = Catalog::open_with(&store, &Retention::new(&rules).unwrap(), now).unwrap();
    let mut done: Vec<(String, usize, usize)> = c
        .apply_retention()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d.path.file_name().unwrap().to_string_lossy().into_owned(),
                d.rows_before,
                d.rows_after,
            )
        })
        .collect();
    done.sort();
    let part = |n: &str, ext: &str, b, a| (format!("part-0000000{n}.{ext}"), b, a);
    assert_eq!(
        done,
        [
            part("0", "arrows", 2, 0),
            part("0", "parquet", 2, 0),
            part("1", "arrows", 2, 1),
            part("1", "parquet", 2, 1),
        ]
    );
    let after = Catalog::open(&store).unwrap();
    for t in ["forecasts_arrows", "forecasts_parquet"] {
        let n = after.query(&format!("SELECT count(*) FROM {t}")).unwrap();
        assert_eq!(
            Catalog::render(&n, Format::Csv).unwrap().lines().nth(1),
            Some("3"),
            "{t}"
        );
    }
}
