//! Retention per tenant: how long each tenant's history is kept in the store.
//!
//! A tenant is a workload prefix (`machine-1-`, `prom:`; the empty prefix is everyone not
//! matched by a longer one). A rule keeps a row while its time is within `keep` of the
//! reference instant (now, or `--as-of`); a workload that no rule matches is kept for ever.
//! Rules apply to every table that has a `workload` column and a time column (the first of
//! [`TIME_COLUMNS`]); other tables are untouched.
//!
//! Two effects, both from the same predicate:
//! - **Queries** ([`Catalog::open_with`](crate::Catalog::open_with)): every table is a view of
//!   the rows still retained, so an expired row is never an answer, whether or not the files
//!   were compacted yet.
//! - **Compaction** ([`Catalog::apply_retention`](crate::Catalog::apply_retention)): each
//!   file with expired rows is rewritten without them (a new file renamed over the old one, so
//!   a reader sees the old file or the new one, never half of one).

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

/// Time columns, by preference: the instant a row is about.
pub const TIME_COLUMNS: [&str; 4] = ["event_time", "window_end", "decided_at", "issued_at"];

/// One tenant's rule (`[[retention]]` in the job config).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Workloads whose id starts with this (the longest matching prefix wins; `""` is
    /// everyone else).
    pub prefix: String,
    /// How long their history is kept: a number and a unit, `s`, `m`, `h` or `d` (`90d`).
    pub keep: String,
}

/// Checked rules, longest prefix first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    rules: Vec<(String, i64)>,
}

/// Milliseconds of a duration such as `30d`, `12h`, `90m`, `3600s`.
pub fn parse_keep(keep: &str) -> Option<i64> {
    let keep = keep.trim();
    let unit = keep.chars().last()?;
    let n: f64 = keep[..keep.len() - unit.len_utf8()].trim().parse().ok()?;
    let ms = match unit {
        's' => 1_000.0,
        'm' => 60_000.0,
        'h' => 3_600_000.0,
        'd' => 86_400_000.0,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some((n * ms) as i64)
}

impl Retention {
    /// Checks the rules: each `keep` parses, no prefix twice.
    pub fn new(rules: &[RetentionRule]) -> Result<Self> {
        let mut out: Vec<(String, i64)> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let key = format!("retention[{i}].keep");
            let ms = parse_keep(&r.keep).ok_or_else(|| {
                Error::config(
                    key,
                    format!(
                        "`{}` is not a duration: a number and s, m, h or d (e.g. 30d)",
                        r.keep
                    ),
                )
            })?;
            if out.iter().any(|(p, _)| *p == r.prefix) {
                return Err(Error::config(
                    format!("retention[{i}].prefix"),
                    format!("`{}` has two rules", r.prefix),
                ));
            }
            out.push((r.prefix.clone(), ms));
        }
        out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(Self { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How long `workload`'s history is kept (ms); None: for ever.
    pub fn keep_of(&self, workload: &str) -> Option<i64> {
        self.rules
            .iter()
            .find(|(p, _)| workload.starts_with(p.as_str()))
            .map(|(_, ms)| *ms)
    }

    /// The SQL predicate of retained rows, as of `now_ms`, over a table's `workload` and
    /// `time` columns.
    pub fn predicate(&self, time: &str, now_ms: i64) -> Option<String> {
        if self.rules.is_empty() {
            return None;
        }
        let mut sql = String::from("CASE");
        for (prefix, keep) in &self.rules {
            let lit = prefix.replace('\'', "''");
            sql.push_str(&format!(
                " WHEN starts_with(CAST(\"workload\" AS VARCHAR), '{lit}') THEN CAST(\"{time}\" AS BIGINT) >= {}",
                now_ms.saturating_sub(*keep)
            ));
        }
        sql.push_str(" ELSE true END");
        Some(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, keep: &str) -> RetentionRule {
        RetentionRule {
            prefix: prefix.into(),
            keep: keep.into(),
        }
    }

    #[test]
    fn the_longest_prefix_decides_and_bad_rules_are_named() {
        let r = Retention::new(&[
            rule("", "1d"),
            rule("machine-1-", "30d"),
            rule("machine-", "7d"),
        ])
        .unwrap();
        assert_eq!(r.keep_of("machine-1-6"), Some(30 * 86_400_000));
        assert_eq!(r.keep_of("machine-2-1"), Some(7 * 86_400_000));
        assert_eq!(r.keep_of("omi-1"), Some(86_400_000));
        let only = Retention::new(&[rule("prom:", "12h")]).unwrap();
        assert_eq!(only.keep_of("omi-1"), None, "no rule: kept for ever");
        assert_eq!(parse_keep("90m"), Some(90 * 60_000));
        assert_eq!(parse_keep("1.5h"), Some(5_400_000));
        let e = Retention::new(&[rule("a", "30 days")]).unwrap_err();
        assert!(e.to_string().contains("retention[0].keep"), "{e}");
        assert!(Retention::new(&[rule("a", "-1d")]).is_err());
        let e = Retention::new(&[rule("a", "1d"), rule("a", "2d")]).unwrap_err();
        assert!(e.to_string().contains("two rules"), "{e}");
        let p = Retention::new(&[rule("it's", "1s")])
            .unwrap()
            .predicate("t", 5000)
            .unwrap();
        assert!(p.contains("'it''s'") && p.contains(">= 4000"), "{p}");
    }
}
