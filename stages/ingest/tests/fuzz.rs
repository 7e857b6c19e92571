//! Fuzz targets of ingest's parsers: every input ends in rows or an error, never a panic (a
//! contained one counts as found) or an abort. `make fuzz` runs each for a set time.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use proptest::prelude::*;
use wfe_contract::{Context, Source};
use wfe_ingest::packets::{PacketConfig, PacketSource, decode};
use wfe_ingest::{FileSource, SourceConfig};
use wfe_testkit::fuzz;

/// Whose code a target runs: wfe's own parsers must never panic; a panic inside the arrow
/// or parquet decoders on a corrupt file is contained at the reader's boundary (the file
/// fails with "reader of FILE panicked: ..."), which is the answer wfe gives, so it passes.
#[derive(Clone, Copy, PartialEq)]
enum Decoder {
    Ours,
    Library,
}

/// Reads `bytes` as the file `name` to its end (or its first error); a panic found is `Err`.
fn read_file(name: &str, bytes: &[u8], decoder: Decoder) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).map_err(|e| e.to_string())?;
    let src = FileSource::open(&[SourceConfig::new(&p)], false);
    drain(src.map(|s| Box::new(s) as Box<dyn Source>), decoder)
}

fn drain(src: wfe_contract::Result<Box<dyn Source>>, decoder: Decoder) -> Result<(), String> {
    let Ok(mut src) = src else { return Ok(()) };
    let mut ctx = Context::new("ingest");
    loop {
        match src.next_batch(&mut ctx) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == "panic" && decoder == Decoder::Ours => {
                return Err(e.to_string());
            }
            Err(_) => return Ok(()),
        }
    }
}

const LONG: &str = "timestamp,workload,metric,value\n1700000060,a,cpu,0.5\n1700000000,b,mem,12\n1700000000,a,cpu,\"0.25\"\n1700000120,a,cpu,NaN\n";
const WIDE: &str =
    "timestamp,cpu,mem\n1700000000,0.5,0.2\n1700000060,0.6,0.1\n1700000120.5,1e3,-2\n";
const SMD: &str = "timestamp,split,label,m00,m01\n1700000000,train,,0.1,0.2\n1700000060,train,,0.2,0.3\n1700000120,test,1,0.3,0.4\n1700000180,test,0,0.2,0.1\n";

#[test]
fn fuzz_csv_long() {
    fuzz::run("csv_long", fuzz::mutations(LONG.into(), 8), |b| {
        read_file("x.csv", &b, Decoder::Ours)
    });
}

#[test]
fn fuzz_csv_wide() {
    fuzz::run("csv_wide", fuzz::mutations(WIDE.into(), 8), |b| {
        read_file("x.csv", &b, Decoder::Ours)
    });
}

#[test]
fn fuzz_csv_smd() {
    fuzz::run("csv_smd", fuzz::mutations(SMD.into(), 8), |b| {
        read_file("x.csv", &b, Decoder::Ours)
    });
}

fn raw_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("timestamp", DataType::Int64, true),
        Field::new("workload", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![
                1_700_000_060,
                1_700_000_000,
                1_700_000_120,
            ])),
            Arc::new(StringArray::from(vec!["a", "b", "a"])),
            Arc::new(StringArray::from(vec!["cpu", "cpu", "mem"])),
            Arc::new(Float64Array::from(vec![0.5, 1.0, 2.0])),
        ],
    )
    .unwrap()
}

fn parquet_bytes() -> Vec<u8> {
    let b = raw_batch();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, b.schema(), None).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    out
}

fn ipc_bytes(file: bool) -> Vec<u8> {
    let b = raw_batch();
    let mut out = Vec::new();
    if file {
        let mut w = arrow_ipc::writer::FileWriter::try_new(&mut out, &b.schema()).unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
    } else {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &b.schema()).unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
    }
    out
}

#[test]
fn fuzz_parquet() {
    fuzz::run("parquet", fuzz::mutations(parquet_bytes(), 6), |b| {
        read_file("x.parquet", &b, Decoder::Library)
    });
}

#[test]
fn fuzz_ipc_file() {
    fuzz::run("ipc_file", fuzz::mutations(ipc_bytes(true), 6), |b| {
        read_file("x.arrow", &b, Decoder::Library)
    });
}

#[test]
fn fuzz_ipc_stream() {
    fuzz::run("ipc_stream", fuzz::mutations(ipc_bytes(false), 6), |b| {
        read_file("x.arrow", &b, Decoder::Library)
    });
}

/// The IPC check alone, in memory: many more executions per second than through files.
#[test]
fn fuzz_ipc_check() {
    let (f, s) = (ipc_bytes(true), ipc_bytes(false));
    let both = prop_oneof![fuzz::mutations(f, 6), fuzz::mutations(s, 6)];
    fuzz::run("ipc_check", both, |b| {
        let n = b.len() as u64;
        let _ = wfe_contract::ipc::check_file(&mut Cursor::new(&b), n, "f");
        if wfe_contract::ipc::check_stream(&mut Cursor::new(&b), n, "s").is_ok() {
            // What passes is decoded as wfe decodes it: inside the panic boundary (arrow-ipc
            // asserts on some corrupt buffers the check cannot judge without the schema).
            let _ = wfe_contract::panic::contain("decode", || {
                if let Ok(r) = arrow_ipc::reader::StreamReader::try_new(Cursor::new(&b), None) {
                    for _ in r {}
                }
                Ok(())
            });
        }
        Ok(())
    });
}

fn pcap_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(&mut out, header).unwrap();
    for i in 0..4u64 {
        // Ethernet, IPv4 (UDP), ports 50000 -> 8080, 16 bytes of payload.
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ]);
        f.extend_from_slice(&[0xc3, 0x50, 0x1f, 0x90, 0, 24, 0, 0]);
        f.extend_from_slice(&[0u8; 16]);
        let ts = std::time::Duration::from_millis(1_700_000_000_000 + i * 300);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, &f))
            .unwrap();
    }
    out
}

fn packet_cfg() -> PacketConfig {
    PacketConfig {
        window_s: 1.0,
        workloads: vec![],
        other: Some("all".into()),
        tcpdump: "tcpdump".into(),
    }
}

#[test]
fn fuzz_pcap() {
    fuzz::run("pcap", fuzz::mutations(pcap_bytes(), 8), |b| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = dir.path().join("c.pcap");
        std::fs::write(&p, &b).map_err(|e| e.to_string())?;
        let src = PacketSource::file(Path::new(&p), packet_cfg());
        drain(src.map(|s| Box::new(s) as Box<dyn Source>), Decoder::Ours)
    });
}

/// The header decoder alone, on any frame of any link type.
#[test]
fn fuzz_packet_headers() {
    let links = prop_oneof![
        Just(DataLink::ETHERNET),
        Just(DataLink::LINUX_SLL),
        Just(DataLink::RAW),
        Just(DataLink::IPV4),
        Just(DataLink::IPV6),
        Just(DataLink::NULL),
        Just(DataLink::LOOP),
    ];
    let frame = proptest::collection::vec(any::<u8>(), 0..200);
    fuzz::run(
        "packet_headers",
        (links, frame, any::<u32>()),
        |(link, f, len)| {
            let _ = decode(link, 1_700_000_000_000_000, len, &f);
            Ok(())
        },
    );
}
