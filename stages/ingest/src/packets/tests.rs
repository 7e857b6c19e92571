use std::time::Duration;

use pcap_file::DataLink;

use super::*;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

fn eth_ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, transport: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + transport.len()) as u16;
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    f.extend(ip);
    f.extend_from_slice(transport);
    f
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t
}

fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    u
}

fn cfg() -> PacketConfig {
    PacketConfig {
        window_s: 1.0,
        workloads: vec![
            PacketWorkload {
                name: "web".into(),
                addresses: vec![],
                ports: vec![8080],
            },
            PacketWorkload {
                name: "dns".into(),
                addresses: vec!["10.0.0.53".parse().unwrap()],
                ports: vec![53],
            },
        ],
        other: None,
        ..Default::default()
    }
}

fn row<'a>(rows: &'a [Row], w: &str, m: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.1 == w && r.2 == m)
}

#[test]
fn windows_hold_sizes_timing_protocols_and_flags_per_workload() {
    let mut f = Features::new(cfg()).unwrap();
    let l = DataLink::ETHERNET;
    let web = |us: i64, flags: u8, n: u32| {
        let frame = eth_ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, &tcp(40000, 8080, flags));
        let mut h = decode(l, us, n, &frame).unwrap();
        h.len = n;
        h
    };
    // Window [0, 1 s): SYN, two data packets, a FIN from the web workload; one DNS query.
    let mut rows = Vec::new();
    for h in [
        web(100_000, 0x02, 60),
        web(200_000, 0x10, 1500),
        web(400_000, 0x10, 500),
        web(900_000, 0x11, 60),
    ] {
        rows.extend(f.add(&h).unwrap());
    }
    let q = eth_ipv4([10, 0, 0, 9], [10, 0, 0, 53], 17, &udp(5353, 53, 30));
    rows.extend(
        f.add(&decode(l, 500_000, q.len() as u32, &q).unwrap())
            .unwrap(),
    );
    assert!(rows.is_empty(), "no window closed yet");
    // The next window's first packet closes it.
    rows.extend(f.add(&web(1_300_000, 0x14, 60)).unwrap());
    let v = |w: &str, m: &str| row(&rows, w, m).map(|r| r.3);
    assert_eq!(
        row(&rows, "web", "net.packets_per_s").unwrap().0,
        1000,
        "window end in ms"
    );
    assert_eq!(v("web", "net.packets_per_s"), Some(4.0));
    assert_eq!(v("web", "net.bytes_per_s"), Some(2120.0));
    assert_eq!(v("web", "net.size_p50"), Some(280.0), "between 60 and 500");
    assert_eq!(v("web", "net.size_mean"), Some(530.0));
    assert_eq!(v("web", "net.syn_per_s"), Some(1.0));
    assert_eq!(v("web", "net.fin_per_s"), Some(1.0));
    assert_eq!(v("web", "net.rst_per_s"), Some(0.0));
    assert_eq!(v("web", "net.tcp_share"), Some(1.0));
    assert_eq!(v("web", "net.iat_mean_ms"), Some(800.0 / 3.0));
    assert_eq!(v("dns", "net.udp_share"), Some(1.0));
    assert_eq!(v("dns", "net.size_p50"), Some((14 + 20 + 8 + 30) as f64));
    assert_eq!(v("dns", "net.iat_mean_ms"), None, "one packet: no interval");
    // A packet from before the open window is late.
    assert!(f.add(&web(900_000, 0x10, 60)).is_err());
    // Two silent windows, then a packet at 4.2 s: the window [1, 2 s) closes with its
    // data, [2, 3 s) and [3, 4 s) get zero rates for both workloads.
    let later = f.add(&web(4_200_000, 0x10, 60)).unwrap();
    let at = |end: i64, w: &str| {
        later
            .iter()
            .find(|r| r.0 == end && r.1 == w && r.2 == "net.packets_per_s")
            .map(|r| r.3)
    };
    assert_eq!(at(2000, "web"), Some(1.0));
    assert_eq!(at(2000, "dns"), Some(0.0));
    assert_eq!((at(3000, "web"), at(4000, "dns")), (Some(0.0), Some(0.0)));
    assert_eq!(
        at(5000, "web"),
        None,
        "the packet's own window is still open"
    );
    // At the end: the open window closes; DNS, silent in it, gets zero rates only.
    let last = f.close();
    assert_eq!(row(&last, "web", "net.packets_per_s").unwrap().3, 1.0);
    assert_eq!(row(&last, "dns", "net.packets_per_s").unwrap().3, 0.0);
    assert!(row(&last, "dns", "net.size_p50").is_none());
}

#[test]
fn a_capture_file_becomes_metrics_and_bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pcap");
    {
        let file = std::fs::File::create(&path).unwrap();
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(file, header).unwrap();
        for i in 0..30u64 {
            let frame = eth_ipv4([127, 0, 0, 1], [127, 0, 0, 1], 17, &udp(50000, 8080, 100));
            let ts = Duration::from_millis(1_700_000_000_000 + i * 100);
            w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))
                .unwrap();
        }
        // A truncated frame: counted, skipped.
        let ts = Duration::from_millis(1_700_000_003_050);
        w.write_packet(&PcapPacket::new(ts, 5, &[1, 2, 3, 4, 5]))
            .unwrap();
    }
    let mut src = PacketSource::file(&path, cfg()).unwrap();
    let mut ctx = Context::new("ingest");
    let mut rows = 0;
    let mut pps = Vec::new();
    while let Some(b) = src.next_batch(&mut ctx).unwrap() {
        rows += b.num_rows();
        let m = wfe_contract::columns::DictStrings::new(&b, "metric").unwrap();
        let v = wfe_contract::columns::f64s(&b, "value").unwrap();
        for i in 0..b.num_rows() {
            if m.get(i) == Some("net.packets_per_s") {
                pps.push(v.value(i));
            }
        }
    }
    assert!(rows > 0);
    assert_eq!(pps, [10.0, 10.0, 10.0], "30 packets, 10 per 1 s window");
    assert_eq!(ctx.counters()["rejected.undecodable_packet"], 1);

    std::fs::write(dir.path().join("no.pcap"), b"not a capture at all").unwrap();
    let mut src = PacketSource::file(&dir.path().join("no.pcap"), cfg()).unwrap();
    let e = src.next_batch(&mut ctx).unwrap_err().to_string();
    assert!(e.contains("no.pcap") && e.contains("not a pcap"), "{e}");
    let bad = PacketConfig {
        workloads: vec![PacketWorkload {
            name: "x".into(),
            addresses: vec![],
            ports: vec![],
        }],
        ..cfg()
    };
    assert!(
        Features::new(bad)
            .unwrap_err()
            .to_string()
            .contains("packets.workloads[0]")
    );
}
