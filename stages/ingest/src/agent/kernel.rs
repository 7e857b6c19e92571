//! Reading what the kernel offers: the cgroup v2 mount and groups, and the text formats of
//! `/proc/stat`, `/proc/meminfo`, `/proc/diskstats`, `/proc/net/dev`, `/proc/pressure/*` and
//! a group's `cpu.stat` and `io.stat`, each into (metric, value) pairs.

use std::path::{Path, PathBuf};

/// The cgroup v2 mount point named in `<proc>/mounts`.
pub(super) fn cgroup2_mount(proc_root: &Path) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string(proc_root.join("mounts")).ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// The groups under `root` down to `depth` levels (the root itself as `/`), by path.
pub(super) fn cgroups(root: &Path, depth: usize) -> Vec<(String, PathBuf)> {
    let mut out = vec![("/".to_string(), root.to_path_buf())];
    let mut level = vec![root.to_path_buf()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(e.path());
                }
            }
        }
        next.sort();
        for d in &next {
            if let Ok(rel) = d.strip_prefix(root) {
                out.push((format!("/{}", rel.display()), d.clone()));
            }
        }
        level = next;
    }
    out
}

/// `/proc/stat`'s first line: total, idle (idle + iowait) and iowait jiffies.
pub fn parse_stat(text: &str) -> Vec<(&'static str, f64)> {
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return Vec::new();
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user and nice.
    let total: f64 = v.iter().take(8).sum();
    vec![
        ("cpu_total", total),
        ("cpu_idle", v[3] + v[4]),
        ("cpu_iowait", v[4]),
    ]
}

/// `/proc/meminfo`: used bytes and the used fraction (MemTotal - MemAvailable).
pub fn parse_meminfo(text: &str) -> Vec<(&'static str, f64)> {
    let kb = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v * 1024.0)
    };
    match (kb("MemTotal"), kb("MemAvailable")) {
        (Some(total), Some(avail)) if total > 0.0 => vec![
            ("memory_used_bytes", total - avail),
            ("memory_used_fraction", (total - avail) / total),
        ],
        _ => Vec::new(),
    }
}

/// `/proc/diskstats` summed over whole disks (partitions, loop, ram and device-mapper left
/// out so nothing counts twice): bytes read and written, operations, time busy and time
/// operations waited (ms).
pub fn parse_diskstats(text: &str) -> Vec<(&'static str, f64)> {
    let mut sum = [0.0f64; 6];
    let mut any = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 14 || !is_whole_disk(f[2]) {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        // 3 reads, 5 sectors read, 6 ms reading, 7 writes, 9 sectors written, 10 ms writing,
        // 12 ms doing I/O (sectors are 512 bytes whatever the device).
        sum[0] += n(5) * 512.0;
        sum[1] += n(9) * 512.0;
        sum[2] += n(3) + n(7);
        sum[3] += n(12);
        sum[4] += n(6) + n(10);
        any = true;
    }
    if !any {
        return Vec::new();
    }
    vec![
        ("disk_read_bytes", sum[0]),
        ("disk_write_bytes", sum[1]),
        ("disk_ios", sum[2]),
        ("disk_io_ms", sum[3]),
        ("disk_io_wait_ms", sum[4]),
    ]
}

fn is_whole_disk(name: &str) -> bool {
    if ["loop", "ram", "dm-", "zram", "sr"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return false;
    }
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        // nvme0n1 is a disk, nvme0n1p1 a partition: digits, `p`, digits at the end.
        let Some((head, tail)) = name.rsplit_once('p') else {
            return true;
        };
        let partition = !tail.is_empty()
            && tail.chars().all(|c| c.is_ascii_digit())
            && head.ends_with(|c: char| c.is_ascii_digit());
        return !partition;
    }
    // sda, vda, xvda are disks; sda1 a partition.
    !name.ends_with(|c: char| c.is_ascii_digit())
}

/// `/proc/net/dev` summed over interfaces other than loopback.
pub fn parse_net_dev(text: &str) -> Vec<(&'static str, f64)> {
    let mut sum = [0.0f64; 4];
    let mut any = false;
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() < 10 {
            continue;
        }
        sum[0] += f[0];
        sum[1] += f[1];
        sum[2] += f[8];
        sum[3] += f[9];
        any = true;
    }
    if !any {
        return Vec::new();
    }
    vec![
        ("net_rx_bytes", sum[0]),
        ("net_rx_packets", sum[1]),
        ("net_tx_bytes", sum[2]),
        ("net_tx_packets", sum[3]),
    ]
}

/// A pressure file (`some ... total=N`, `full ... total=N`): stalled microseconds.
pub fn parse_pressure(res: &str, text: &str) -> Vec<(&'static str, f64)> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let names: &[(&str, &'static str)] = match res {
        "cpu" => &[("some", "psi_cpu_some_us")],
        "memory" => &[
            ("some", "psi_memory_some_us"),
            ("full", "psi_memory_full_us"),
        ],
        "io" => &[("some", "psi_io_some_us"), ("full", "psi_io_full_us")],
        _ => &[],
    };
    names
        .iter()
        .filter_map(|(k, m)| total(k).map(|v| (*m, v)))
        .collect()
}

/// A cgroup's `cpu.stat`: microseconds of CPU used.
pub fn parse_cgroup_cpu(text: &str) -> Vec<(&'static str, f64)> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| vec![("cpu_usage_usec", v)])
        .unwrap_or_default()
}

/// A cgroup's `io.stat`: bytes read and written over its devices.
pub fn parse_io_stat(text: &str) -> Vec<(&'static str, f64)> {
    let (mut r, mut w, mut any) = (0.0, 0.0, false);
    for l in text.lines() {
        for f in l.split_whitespace().skip(1) {
            if let Some(v) = f
                .strip_prefix("rbytes=")
                .and_then(|v| v.parse::<f64>().ok())
            {
                r += v;
                any = true;
            } else if let Some(v) = f
                .strip_prefix("wbytes=")
                .and_then(|v| v.parse::<f64>().ok())
            {
                w += v;
                any = true;
            }
        }
    }
    if any {
        vec![("disk_read_bytes", r), ("disk_write_bytes", w)]
    } else {
        Vec::new()
    }
}
