//! Label sets as one canonical string, `k=v,k=v` sorted by key.
//!
//! Labels are per sample but repeat across rows, so topics store them dictionary-encoded as
//! one string rather than as an Arrow map: a map costs two strings per label per row, the
//! dictionary one integer per row. `,`, `=` and `%` inside keys or values are percent-escaped.

use std::collections::BTreeMap;

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            ',' => out.push_str("%2C"),
            '=' => out.push_str("%3D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("%2C", ",")
        .replace("%3D", "=")
        .replace("%25", "%")
}

/// Formats a label set canonically (sorted by key).
pub fn format<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = labels.into_iter().collect();
    let mut out = String::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape(k, &mut out);
        out.push('=');
        escape(v, &mut out);
    }
    out
}

/// Parses a canonical label string; entries without `=` are ignored.
pub fn parse(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

/// The value of one label, without building the whole map.
pub fn get<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.split(',').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

/// Label keys that describe where a workload runs (host metadata), e.g. `env.instance_type`.
pub const ENV_PREFIX: &str = "env.";

/// The environment in a canonical label set: its `env.*` labels without the prefix, as a
/// canonical set (`cpu_model=...,instance_type=...`); None when it has none. Where a
/// workload may run (fingerprint's neighbours, contention's moves) is matched on it.
pub fn environment(labels: &str) -> Option<String> {
    let env: Vec<(String, String)> = parse(labels)
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_string(), v)))
        .collect();
    (!env.is_empty()).then(|| format(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_with_escapes() {
        let s = super::format([("split", "test"), ("label", "1"), ("odd,key", "a=b%")]);
        assert_eq!(s, "label=1,odd%2Ckey=a%3Db%25,split=test");
        let m = super::parse(&s);
        assert_eq!(m["odd,key"], "a=b%");
        assert_eq!(super::get(&s, "split"), Some("test"));
        assert_eq!(super::get(&s, "nope"), None);
    }
}
