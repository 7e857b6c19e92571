use super::*;
use wfe_contract::columns::{DictStrings, f64s};

#[test]
fn parses_the_kernels_formats() {
    let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
    assert_eq!(
        parse_stat(stat),
        [
            ("cpu_total", 980.0),
            ("cpu_idle", 820.0),
            ("cpu_iowait", 20.0)
        ]
    );
    let mem = "MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:   4000000 kB\n";
    let m = parse_meminfo(mem);
    assert_eq!(m[0], ("memory_used_bytes", 12_000_000.0 * 1024.0));
    assert!((m[1].1 - 0.75).abs() < 1e-12);
    let disks = "   8       0 sda 10 0 200 30 20 0 400 50 0 70 80 0 0 0 0\n\
                 8       1 sda1 10 0 200 30 20 0 400 50 0 70 80 0 0 0 0\n\
                 7       0 loop0 99 0 999 9 9 0 9 9 0 9 9 0 0 0 0\n\
               259       0 nvme0n1 1 0 8 2 1 0 8 2 0 3 4 0 0 0 0\n\
               259       1 nvme0n1p1 1 0 8 2 1 0 8 2 0 3 4 0 0 0 0\n";
    let d: BTreeMap<_, _> = parse_diskstats(disks).into_iter().collect();
    assert_eq!(d["disk_read_bytes"], (200.0 + 8.0) * 512.0);
    assert_eq!(d["disk_write_bytes"], (400.0 + 8.0) * 512.0);
    assert_eq!(d["disk_ios"], 30.0 + 2.0);
    assert_eq!(d["disk_io_ms"], 73.0);
    assert_eq!(d["disk_io_wait_ms"], 80.0 + 4.0);
    let net = "Inter-| head\n face | head\n    lo: 999 9 0 0 0 0 0 0 999 9 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n";
    let n: BTreeMap<_, _> = parse_net_dev(net).into_iter().collect();
    assert_eq!(
        (n["net_rx_bytes"], n["net_tx_bytes"], n["net_rx_packets"]),
        (1000.0, 2000.0, 10.0)
    );
    let psi = "some avg10=0.23 avg60=1.85 avg300=6.51 total=9308\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=17\n";
    assert_eq!(
        parse_pressure("io", psi),
        [("psi_io_some_us", 9308.0), ("psi_io_full_us", 17.0)]
    );
    assert_eq!(parse_pressure("cpu", psi), [("psi_cpu_some_us", 9308.0)]);
    assert_eq!(
        parse_cgroup_cpu("usage_usec 1234\nuser_usec 1000\n"),
        [("cpu_usage_usec", 1234.0)]
    );
    assert_eq!(
        parse_io_stat("8:0 rbytes=100 wbytes=50 rios=1 wios=1\n8:16 rbytes=1 wbytes=2\n"),
        [("disk_read_bytes", 101.0), ("disk_write_bytes", 52.0)]
    );
    // Garbage gives nothing, not a panic.
    for f in [parse_stat, parse_meminfo, parse_diskstats, parse_net_dev] {
        assert!(f("garbage\n\u{0}\n").is_empty());
    }
}

#[test]
fn counters_become_rates_and_a_reset_gives_no_rate() {
    let t0 = Instant::now();
    let mut a = Sample {
        at: Some(t0),
        ..Default::default()
    };
    let mut b = Sample {
        at: Some(t0 + Duration::from_secs(2)),
        ..Default::default()
    };
    let h = "h".to_string();
    for (s, total, idle, rx, ios, wait) in [
        (&mut a, 1000.0, 800.0, 5000.0, 10.0, 100.0),
        (&mut b, 1400.0, 900.0, 9000.0, 30.0, 300.0),
    ] {
        s.counters.insert((h.clone(), "cpu_total"), total);
        s.counters.insert((h.clone(), "cpu_idle"), idle);
        s.counters.insert((h.clone(), "net_rx_bytes"), rx);
        s.counters.insert((h.clone(), "disk_ios"), ios);
        s.counters.insert((h.clone(), "disk_io_wait_ms"), wait);
    }
    a.counters.insert((h.clone(), "net_tx_bytes"), 10.0);
    b.counters.insert((h.clone(), "net_tx_bytes"), 5.0);
    b.gauges.insert((h.clone(), "memory_used_fraction"), 0.5);
    let r: BTreeMap<_, _> = rows(&a, &b).into_iter().map(|(_, m, v)| (m, v)).collect();
    assert!((r["cpu_utilisation"] - 0.75).abs() < 1e-9);
    assert!((r["net_rx_bytes_per_s"] - 2000.0).abs() < 1e-9);
    assert!((r["disk_ios_per_s"] - 10.0).abs() < 1e-9);
    assert!((r["disk_latency_ms"] - 10.0).abs() < 1e-9);
    assert_eq!(r["memory_used_fraction"], 0.5);
    assert!(
        !r.contains_key("net_tx_bytes_per_s"),
        "a counter that went back"
    );
    // The first sample: gauges only.
    assert_eq!(rows(&Sample::default(), &b).len(), 1);
}

#[test]
fn samples_this_machine() {
    let mut src = AgentSource::new(AgentConfig {
        interval_s: 0.2,
        samples: Some(3),
        ..Default::default()
    })
    .unwrap();
    let mut ctx = Context::new("agent");
    let mut batches = Vec::new();
    while let Some(b) = src.next_batch(&mut ctx).unwrap() {
        batches.push(b);
    }
    assert_eq!(batches.len(), 3);
    let last = batches.last().unwrap();
    let w = DictStrings::new(last, "workload").unwrap();
    let m = DictStrings::new(last, "metric").unwrap();
    let v = f64s(last, "value").unwrap();
    let host = src.host().to_string();
    let of = |name: &str| {
        (0..last.num_rows())
            .find(|&r| w.get(r) == Some(host.as_str()) && m.get(r) == Some(name))
            .map(|r| v.value(r))
    };
    let cpu = of("cpu_utilisation").expect("host CPU from /proc/stat");
    assert!((0.0..=1.0).contains(&cpu), "{cpu}");
    let mem = of("memory_used_fraction").expect("host memory from /proc/meminfo");
    assert!(mem > 0.0 && mem < 1.0, "{mem}");
    assert!(v.values().iter().all(|x| x.is_finite() && *x >= 0.0));
    let labels = DictStrings::new(last, "labels").unwrap();
    let l = (0..last.num_rows()).find_map(|r| labels.get(r)).unwrap();
    assert!(
        l.contains("env.kernel=") && l.contains("source=agent"),
        "{l}"
    );
    // A /proc that is not one: a clear error.
    let e = AgentSource::new(AgentConfig {
        proc_root: "/nonexistent".into(),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("not a Linux /proc"), "{e}");
}
