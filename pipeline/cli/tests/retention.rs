//! `wfe sql` with retention per tenant on a real run's store: queries see only what each
//! tenant's rule keeps, `--apply-retention` rewrites the Parquet files without the rest, and a
//! bad rule is an error naming it.

use std::path::Path;

mod common;
use common::{shared_data, wfe};

const DAY: i64 = 86_400_000;

fn csv(dir: &Path, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = vec!["sql", "--store", "store", "--format", "csv"];
    all.extend_from_slice(args);
    let o = wfe(&all, dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn each_tenant_keeps_its_own_history_in_queries_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = shared_data();
    std::fs::write(
        dir.path().join("job.toml"),
        format!(
            "[[sources]]\npath = \"{0}/smd\"\nonly = [\"machine-1-6\"]\n\n\
             [[sources]]\npath = \"{0}/asd\"\nonly = [\"omi-1\"]\n\n[run]\nprogress = false\n\n\
             [stages]\nenabled = [\"normalise\", \"fingerprint\"]\n\n\
             [outputs]\ndir = \"store\"\nparquet = [\"metrics.norm\", \"fingerprints\"]\njsonl = []\n",
            data.display()
        ),
    )
    .unwrap();
    let o = wfe(&["run", "--config", "job.toml"], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // SMD keeps its last day, ASD its last 7 days, counted back from the newest sample of
    // either (the two sets cover different dates, so each rule reaches back to its own).
    let newest_of = |w: &str| -> i64 {
        csv(
            dir.path(),
            &[&format!(
                "SELECT CAST(max(event_time) AS BIGINT) FROM metrics_norm WHERE workload = '{w}'"
            )],
        )[0][0]
            .parse()
            .unwrap()
    };
    let (smd_end, asd_end) = (newest_of("machine-1-6"), newest_of("omi-1"));
    let newest = smd_end.max(asd_end);
    let keep_smd = (newest - smd_end + DAY) / 1000;
    let keep_asd = (newest - asd_end + 7 * DAY) / 1000;
    std::fs::write(
        dir.path().join("retention.toml"),
        format!(
            "[[retention]]\nprefix = \"machine-\"\nkeep = \"{keep_smd}s\"\n\n\
             [[retention]]\nprefix = \"omi-\"\nkeep = \"{keep_asd}s\"\n"
        ),
    )
    .unwrap();
    let as_of = newest.to_string();
    let count_from = |cut_smd: i64, cut_asd: i64| {
        csv(
            dir.path(),
            &[&format!(
                "SELECT CAST(workload AS VARCHAR) AS w, count(*) FROM metrics_norm \
                 WHERE (CAST(workload AS VARCHAR) = 'machine-1-6' AND CAST(event_time AS BIGINT) >= {cut_smd}) \
                    OR (CAST(workload AS VARCHAR) = 'omi-1' AND CAST(event_time AS BIGINT) >= {cut_asd}) \
                 GROUP BY 1 ORDER BY 1"
            )],
        )
    };
    let want = count_from(smd_end - DAY, asd_end - 7 * DAY);
    let everything = count_from(i64::MIN, i64::MIN);
    assert_eq!(want.len(), 2, "{want:?}");
    for (w, e) in want.iter().zip(&everything) {
        let (kept, all): (u64, u64) = (w[1].parse().unwrap(), e[1].parse().unwrap());
        assert!(
            kept > 0 && kept < all,
            "{w:?} of {e:?}: the rule must cut into the history"
        );
    }
    let per_workload =
        "SELECT CAST(workload AS VARCHAR) AS w, count(*) FROM metrics_norm GROUP BY 1 ORDER BY 1";
    let retained = |extra: &[&str]| {
        let mut a = vec!["--config", "retention.toml", "--as-of", &as_of];
        a.extend_from_slice(extra);
        a.push(per_workload);
        csv(dir.path(), &a)
    };
    assert_eq!(retained(&[]), want, "queries see retained rows only");
    assert_eq!(
        csv(dir.path(), &[per_workload]),
        everything,
        "the files are untouched by queries"
    );

    // Fingerprint windows ending before the cut are gone too.
    let fp = csv(
        dir.path(),
        &[
            "--config",
            "retention.toml",
            "--as-of",
            &as_of,
            "SELECT CAST(min(window_end) AS BIGINT) FROM fingerprints WHERE workload = 'machine-1-6'",
        ],
    );
    assert!(fp[0][0].parse::<i64>().unwrap() >= smd_end - DAY, "{fp:?}");

    // Compaction: the files lose the expired rows; a query without rules then sees the same.
    let o = wfe(
        &[
            "sql",
            "--store",
            "store",
            "--config",
            "retention.toml",
            "--as-of",
            &as_of,
            "--apply-retention",
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("retention: metrics_norm") && err.contains("expired"),
        "{err}"
    );
    assert_eq!(csv(dir.path(), &[per_workload]), want);

    // A bad rule names itself.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[retention]]\nprefix = \"x\"\nkeep = \"soon\"\n",
    )
    .unwrap();
    let o = wfe(
        &[
            "sql", "--store", "store", "--config", "bad.toml", "SELECT 1",
        ],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("retention[0].keep"));
}
