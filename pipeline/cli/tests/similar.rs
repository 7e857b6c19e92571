//! Environment matching end to end on SMD: sources tag each service group's machines with
//! host metadata (`env.*` labels), a run writes the fingerprint store, and `wfe similar`
//! answers for every machine, its own label left out of the vote, which environment suits it,
//! from the neighbours the stage itself found; `wfe sql` reads the same store.

use std::path::Path;

mod common;
use common::{shared_data, wfe};

/// SMD's machines by service group (the first digit), and the environment each group runs on.
const GROUPS: [(&str, &[&str]); 3] = [
    ("m5.4xlarge", &["machine-1-6", "machine-1-7"]),
    (
        "c5.9xlarge",
        &["machine-2-1", "machine-2-2", "machine-2-7", "machine-2-8"],
    ),
    ("r5.8xlarge", &["machine-3-3", "machine-3-4"]),
];
/// Fingerprinted with no environment at all: a brand-new host.
const UNLABELLED: &str = "machine-2-7";

fn job(dir: &Path) -> std::path::PathBuf {
    let smd = shared_data().join("smd");
    let mut toml = String::new();
    for (instance, machines) in GROUPS {
        let labelled: Vec<String> = machines
            .iter()
            .filter(|m| **m != UNLABELLED)
            .map(|m| format!("\"{m}\""))
            .collect();
        toml += &format!(
            "[[sources]]\npath = \"{}\"\nonly = [{}]\nlabels = {{ \"env.instance_type\" = \"{instance}\", \"env.kernel\" = \"6.1\" }}\n\n",
            smd.display(),
            labelled.join(", ")
        );
    }
    toml += &format!(
        "[[sources]]\npath = \"{}\"\nonly = [\"{UNLABELLED}\"]\n\n[run]\nprogress = false\n\n\
         [stages]\nenabled = [\"normalise\", \"fingerprint\"]\n\n\
         [outputs]\ndir = \"store\"\nparquet = [\"fingerprints\"]\njsonl = []\n",
        smd.display()
    );
    let p = dir.join("job.toml");
    std::fs::write(&p, toml).unwrap();
    p
}

fn similar(dir: &Path, workload: &str, k: &str) -> serde_json::Value {
    let o = wfe(
        &["similar", workload, "--store", "store", "-k", k, "--json"],
        dir,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

/// `wfe sql` over the test's store, as CSV.
fn sql_csv(dir: &Path, query: &str) -> String {
    let o = wfe(&["sql", query, "--store", "store", "--format", "csv"], dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_smd_machine_is_matched_to_an_environment_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let o = wfe(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The stage's own neighbours in each machine's last row, through SQL over the store.
    let csv = sql_csv(
        dir.path(),
        "SELECT f.workload, array_to_string(f.neighbours, ' ') AS n FROM fingerprints f \
         JOIN (SELECT workload, max(window_end) AS t FROM fingerprints GROUP BY workload) l \
         ON f.workload = l.workload AND f.window_end = l.t ORDER BY f.workload",
    );
    let stage: Vec<(String, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let (w, n) = l.split_once(',').unwrap();
            (w.to_string(), n.to_string())
        })
        .collect();
    assert_eq!(stage.len(), 8, "{csv}");
    let mut matched = 0;
    for (instance, machines) in GROUPS {
        let want = format!("instance_type={instance},kernel=6.1");
        for m in machines {
            let answer = similar(dir.path(), m, "3");
            // The store answers with the neighbours the stage found.
            let names: Vec<&str> = answer["neighbours"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["workload"].as_str().unwrap())
                .collect();
            let own = &stage.iter().find(|(w, _)| w == m).unwrap().1;
            assert_eq!(names.join(" "), *own, "{m}: {answer}");
            let weights: f64 = answer["neighbours"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["weight"].as_f64().unwrap())
                .sum();
            assert!((weights - 1.0).abs() < 1e-6, "{answer}");
            if *m == UNLABELLED {
                assert_eq!(answer["environment"], serde_json::Value::Null, "{answer}");
            } else {
                assert_eq!(answer["environment"], want.as_str(), "{answer}");
            }
            // The workload's own label never votes: this is leave-one-out.
            let best = &answer["environments"][0];
            assert!(best["workloads"].as_array().unwrap().iter().all(|w| w != m));
            assert!(
                !best["allocation"].as_array().unwrap().is_empty(),
                "{answer}"
            );
            let nearest = similar(dir.path(), m, "1");
            matched += usize::from(nearest["environments"][0]["environment"] == want.as_str());
        }
    }
    // Over train and test (anomalies included) 6 of 8 machines' nearest workload is in their
    // service group (machine-3-3 and machine-3-4 are not; on the train split alone, `wfe eval
    // fingerprint`, all 8 are), and the new host is matched to its group's environment.
    assert!(matched >= 6, "{matched} of 8");
    let answer = similar(dir.path(), UNLABELLED, "3");
    assert_eq!(
        answer["environments"][0]["environment"],
        "instance_type=c5.9xlarge,kernel=6.1"
    );
    assert!(
        answer["environments"][0]["score"].as_f64().unwrap() > 0.5,
        "{answer}"
    );
    // The same store through SQL: one environment per labelled machine, none for the new one.
    let csv = sql_csv(
        dir.path(),
        "SELECT workload, max(environment) AS env, count(*) AS n FROM fingerprints \
         GROUP BY workload ORDER BY workload",
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "workload,env,n");
    assert_eq!(lines.len(), 9, "{csv}");
    assert!(
        lines[1].starts_with("machine-1-6,\"instance_type=m5.4xlarge,kernel=6.1\","),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{UNLABELLED},,"))),
        "{csv}"
    );
    // The table names the same best environment.
    let o = wfe(
        &["similar", UNLABELLED, "--store", "store", "-k", "3"],
        dir.path(),
    );
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("environments, best first"), "{table}");
    assert!(table.contains("instance_type=c5.9xlarge"), "{table}");
}

#[test]
fn similar_explains_a_missing_store_or_workload() {
    let dir = tempfile::tempdir().unwrap();
    let o = wfe(&["similar", "x", "--store", "nowhere"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere"));
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let o = wfe(&["similar", "x", "--store", "empty"], dir.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no fingerprints*.parquet"), "{err}");
    let o = wfe(&["similar", "x", "--distance", "manhattan"], dir.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`manhattan` is not cosine or euclidean"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}
