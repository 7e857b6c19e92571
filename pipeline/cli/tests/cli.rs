//! The `wfe` binary end to end: the embedded chain on real data, and every bad-input case
//! with its exit status and message.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{STAGES, shared_data, wfe};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A config over `sources` (TOML lines) writing every topic to `out`.
fn config(dir: &Path, sources: &str) -> PathBuf {
    let p = dir.join("job.toml");
    let text = format!(
        "{sources}\n[run]\nprogress = false\n\n[[resources]]\nname = \"cpu\"\nmetrics = [\"m00\"]\nunit = \"vcpu\"\ncapacity = 64.0\n\n\
         [outputs]\ndir = \"out\"\nparquet = [\"metrics.raw\", \"metrics.norm\", \"fingerprints\", \"anomalies\", \"forecasts\", \"decisions\", \"actions\"]\n\
         jsonl = [\"decisions\"]\nipc = [\"anomalies\"]\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn rows_of(summary: &str, topic: &str) -> u64 {
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(topic))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|n| n.replace(',', "").parse().unwrap())
        .unwrap_or_else(|| panic!("no row count for {topic} in:\n{summary}"))
}

#[test]
fn the_embedded_chain_runs_one_smd_machine_through_all_seven_topics() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        "[[sources]]\npath = \"{}\"\nonly = [\"machine-1-6\"]\n",
        shared_data().join("smd").display()
    );
    let cfg = config(dir.path(), &src);
    let o = wfe(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for topic in [
        "metrics.raw",
        "metrics.norm",
        "fingerprints",
        "anomalies",
        "forecasts",
        "decisions",
        "actions",
    ] {
        assert!(rows_of(&out, topic) > 0, "{topic} is empty:\n{out}");
    }
    // 38 metrics x every row of the file, and nothing lost on the way to metrics.norm.
    assert_eq!(rows_of(&out, "metrics.raw"), rows_of(&out, "metrics.norm"));
    assert_eq!(rows_of(&out, "metrics.raw") % 38, 0);
    assert!(out.contains("segments opened"), "{out}");
    // Each Parquet file carries its topic's schema and all its rows.
    for topic in ["metrics.norm", "decisions", "actions"] {
        let f = std::fs::File::open(dir.path().join(format!("out/{topic}.parquet"))).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        assert_eq!(r.schema().metadata()["wfe.schema.name"], topic);
        let n: usize = r.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(n as u64, rows_of(&out, topic));
    }
    let jsonl = std::fs::read_to_string(dir.path().join("out/decisions.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert!(first["reason"].as_str().unwrap().contains("p90"), "{first}");
    assert!(
        dir.path()
            .join("out/anomalies.arrows")
            .metadata()
            .unwrap()
            .len()
            > 0
    );
}

fn bad_csv(dir: &Path) -> PathBuf {
    let p = dir.join("bad.csv");
    std::fs::write(
        &p,
        "timestamp,cpu,mem\n0,0.5,0.1\n60,abc,0.2\n120,0.7\nxx,0.1,0.1\n240,0.2,0.2\n",
    )
    .unwrap();
    p
}

#[test]
fn bad_rows_are_counted_and_skipped_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        "[[sources]]\npath = \"{}\"\n",
        bad_csv(dir.path()).display()
    );
    let cfg = config(dir.path(), &src);
    let o = wfe(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("rejected.non_numeric=1"), "{out}");
    assert!(out.contains("rejected.column_count=1"), "{out}");
    assert!(out.contains("rejected.bad_timestamp=1"), "{out}");
    assert!(
        err.contains("bad.csv:3:2 (cpu)"),
        "the log names file, line and column:\n{err}"
    );
    assert_eq!(rows_of(&out, "metrics.raw"), 5);
}

#[test]
fn strict_stops_at_the_first_bad_row_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        "[[sources]]\npath = \"{}\"\n",
        bad_csv(dir.path()).display()
    );
    let cfg = config(dir.path(), &src);
    let o = wfe(
        &["run", "--strict", "--config", cfg.to_str().unwrap()],
        dir.path(),
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("error: bad input at")
            && err.contains("bad.csv:3:2 (cpu)")
            && err.contains("`abc`"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_empty_and_misconfigured_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[sources]]\npath = \"nope.csv\"\n", "nope.csv"),
        ("[[sources]]\npath = \"empty.csv\"\n", "empty file"),
        (
            "[[sources]]\npath = \"empty.csv\"\ncolour = \"red\"\n",
            "unknown field `colour`",
        ),
    ];
    std::fs::write(dir.path().join("empty.csv"), "").unwrap();
    for (src, want) in cases {
        let cfg = config(dir.path(), src);
        let o = wfe(&["run", "--config", cfg.to_str().unwrap()], dir.path());
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{src}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{src}: {err}"
        );
    }
    let o = wfe(&["run", "--config", "no-such-config.toml"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no-such-config.toml"));
    // The services that keep no API state take no --keda; the API service needs --http.
    // Both are refused before any broker is asked (none listens on port 1).
    let nothing = ["--bootstrap", "127.0.0.1:1"];
    for (args, want) in [
        (
            &[
                "stage",
                "normalise",
                "--http",
                "127.0.0.1:0",
                "--keda",
                "127.0.0.1:0",
            ][..],
            "`--keda`: needs an embedded run or `wfe stage api`",
        ),
        (
            &["stage", "api"][..],
            "`--http`: `wfe stage api` serves the API",
        ),
    ] {
        let o = wfe(&[args, &nothing[..]].concat(), dir.path());
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn every_verb_has_help_and_schemas_match_the_checked_in_description() {
    let dir = tempfile::tempdir().unwrap();
    for verb in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["bench", "--help"],
        vec!["schemas", "--help"],
        vec!["config", "--help"],
    ] {
        let o = wfe(&verb, dir.path());
        assert!(
            o.status.success() && text(&o).0.contains("Usage"),
            "{verb:?}"
        );
    }
    let o = wfe(&["schemas"], dir.path());
    let checked_in = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/TOPICS.md"),
    )
    .unwrap();
    assert_eq!(text(&o).0, checked_in);
    let o = wfe(&["config"], dir.path());
    assert!(text(&o).0.contains("[[sources]]"));
}

#[test]
fn config_check_accepts_the_shipped_jobs_and_names_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for job in ["default.toml", "agent.toml", "../../deploy/k8s/job.toml"] {
        let path = root.join(job);
        let o = wfe(&["config", "--check", path.to_str().unwrap()], dir.path());
        assert!(o.status.success(), "{job}: {}", text(&o).1);
        assert!(text(&o).0.contains(": ok ("), "{job}");
    }
    let bad = dir.path().join("bad.toml");
    let default = std::fs::read_to_string(root.join("default.toml")).unwrap();
    assert!(default.contains("max_risk = 0.15"));
    std::fs::write(&bad, default.replace("max_risk = 0.15", "max_risk = 2.0")).unwrap();
    let o = wfe(&["config", "--check", bad.to_str().unwrap()], dir.path());
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("stages.tier-select.max_risk"),
        "{}",
        text(&o).1
    );
}

/// `wfe bench --state` on one SMD machine and one ASD server: a row per stage and size, the
/// commit after the last batches writes the same at both sizes and less than the first
/// commit, which grows with the workloads; the restore loads (the command fails otherwise).
#[test]
fn bench_state_measures_what_each_stage_changelog_writes() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        "[[sources]]\npath = \"{}\"\nonly = [\"machine-1-6\"]\n\n[[sources]]\npath = \"{}\"\nonly = [\"omi-1\"]\n",
        shared_data().join("smd").display(),
        shared_data().join("asd").display()
    );
    let cfg = config(dir.path(), &src);
    let o = wfe(
        &[
            "bench",
            "--state",
            "4,40",
            "--config",
            cfg.to_str().unwrap(),
        ],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2 * STAGES.len(), "{out}");
    let num = |s: &str| s.parse::<u64>().unwrap();
    for (pair, stage) in rows.chunks(2).zip(STAGES) {
        let (small, large) = (&pair[0], &pair[1]);
        assert_eq!((small[0], large[0]), (stage, stage), "{out}");
        assert_eq!((num(small[1]), num(large[1])), (4, 40), "{out}");
        // Every workload's entries, and what they share (a metric set's basis) once.
        assert!(num(large[2]) >= num(small[2]) + 36, "{out}");
        assert!(
            num(large[3]) > num(small[3]),
            "the first commit writes them all: {out}"
        );
        assert_eq!(
            small[6], large[6],
            "the live commit writes what changed: {out}"
        );
        assert!(num(large[6]) < num(large[3]), "{out}");
    }
}

/// `wfe synth` writes the fleet it says (workloads x steps x metrics rows, every workload
/// named after the ASD server it copies), and `wfe bench --fleet` replays such fleets in
/// child runs: a row per size with the values it read, and each stage's CPU per value.
#[test]
fn synth_writes_a_fleet_and_bench_fleet_replays_it_per_size() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_wfe"))
            .args(args)
            .current_dir(dir.path())
            .env("WFE_DATA", shared_data())
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{args:?}\n{out}\n{err}");
        out
    };
    // Half a day at 300 s: 144 steps.
    let out = run(&[
        "synth",
        "--workloads",
        "12",
        "--days",
        "0.5",
        "--out",
        "f.parquet",
    ]);
    assert!(out.contains("12 workloads x 144 steps, 5184 rows"), "{out}");
    let sql = run(&[
        "sql",
        "--store",
        "f.parquet",
        "--format",
        "csv",
        "SELECT count(DISTINCT workload) AS w, count(DISTINCT metric) AS m, \
         sum(CASE WHEN workload LIKE 'omi-%-f000%' THEN 1 ELSE 0 END) AS named, \
         min(value) >= 0 AND max(value) <= 1 AS unit FROM f",
    ]);
    assert_eq!(sql.lines().last(), Some("12,3,5184,true"), "{sql}");

    let out = run(&["bench", "--fleet", "4,12", "--days", "0.5"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("| light |"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert_eq!((rows[0][1], rows[0][2]), ("4", "1728"), "{out}");
    assert_eq!((rows[1][1], rows[1][2]), ("12", "5184"), "{out}");
    assert!(
        rows[1][8].ends_with(" x"),
        "growth from the smaller fleet: {out}"
    );
    // The stage table: the two sizes, a CPU figure per actor (ingest and six stages) and
    // the other threads'.
    assert_eq!((rows[2][1], rows[3][1]), ("4", "12"), "{out}");
    assert_eq!(rows[3].len(), 2 + 7 + 1, "{out}");
}
