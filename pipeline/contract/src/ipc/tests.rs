use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{FileWriter, StreamWriter};
use arrow_schema::{DataType, Field, Schema};

use super::*;

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("t", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5])),
        ],
    )
    .unwrap()
}

fn stream() -> Vec<u8> {
    let b = batch();
    let mut buf = Vec::new();
    let mut w = StreamWriter::try_new(&mut buf, &b.schema()).unwrap();
    w.write(&b).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

fn file() -> Vec<u8> {
    let b = batch();
    let mut buf = Vec::new();
    let mut w = FileWriter::try_new(&mut buf, &b.schema()).unwrap();
    w.write(&b).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

/// Overwrites the `bodyLength` of the message at `pos` (found as its 8 little-endian bytes in
/// the message's metadata) with `to`.
fn patch_body_length_at(bytes: &mut [u8], pos: usize, to: i64) {
    let meta_len = i32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
    let start = pos + 8;
    let body = arrow_ipc::root_as_message(&bytes[start..start + meta_len])
        .unwrap()
        .bodyLength();
    let needle = body.to_le_bytes();
    let at = (start..start + meta_len - 8)
        .find(|&i| bytes[i..i + 8] == needle)
        .expect("bodyLength in the metadata");
    bytes[at..at + 8].copy_from_slice(&to.to_le_bytes());
}

/// The record batch of a stream: the message after the schema's.
fn patch_stream(bytes: &mut [u8], to: i64) {
    let schema_len = i32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    patch_body_length_at(bytes, 8 + schema_len, to);
}

/// The record batch of a file: where its footer's first block says.
fn patch_file(bytes: &mut [u8], to: i64) {
    let n = bytes.len();
    let footer_len = i32::from_le_bytes(bytes[n - 10..n - 6].try_into().unwrap()) as usize;
    let footer = arrow_ipc::root_as_footer(&bytes[n - 10 - footer_len..n - 10]).unwrap();
    let offset = footer.recordBatches().unwrap().get(0).offset() as usize;
    patch_body_length_at(bytes, offset, to);
}

#[test]
fn a_valid_stream_and_file_pass_and_still_decode() {
    let s = stream();
    check_stream(&mut Cursor::new(&s), s.len() as u64, "s").unwrap();
    assert!(!is_file(&mut Cursor::new(&s)).unwrap());
    let n: usize = StreamReader::try_new(Cursor::new(&s), None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(n, 3);
    let f = file();
    assert!(is_file(&mut Cursor::new(&f)).unwrap());
    check_file(&mut Cursor::new(&f), f.len() as u64, "f").unwrap();
}

#[test]
fn negative_or_oversized_body_lengths_are_rejected_before_decoding() {
    for to in [-8, 1 << 40, i64::MAX] {
        let mut s = stream();
        patch_stream(&mut s, to);
        let e = check_stream(
            &mut Cursor::new(&s),
            s.len() as u64,
            "message on `metrics.raw`",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("message on `metrics.raw`"), "{e}");
        assert!(e.contains(&format!("body length {to} does not fit")), "{e}");

        // The file's copy of the message is checked through its block.
        let mut f = file();
        patch_file(&mut f, to);
        let e = check_file(&mut Cursor::new(&f), f.len() as u64, "x.arrow")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.arrow"), "{e}");
    }
}

#[test]
fn truncated_and_garbled_input_is_rejected() {
    let s = stream();
    for cut in [3, 9, s.len() / 2, s.len() - 9] {
        let r = check_stream(&mut Cursor::new(&s[..cut]), cut as u64, "cut");
        assert!(r.is_err(), "a stream cut at {cut} of {} passed", s.len());
    }
    let mut huge_meta = s.clone();
    huge_meta[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
    let e = check_stream(&mut Cursor::new(&huge_meta), s.len() as u64, "m").unwrap_err();
    assert!(e.to_string().contains("metadata length"), "{e}");
    let garbage = vec![0xAB; 64];
    assert!(check_stream(&mut Cursor::new(&garbage), 64, "g").is_err());

    let f = file();
    let mut bad_footer = f.clone();
    let at = f.len() - 10;
    bad_footer[at..at + 4].copy_from_slice(&(-5i32).to_le_bytes());
    let e = check_file(&mut Cursor::new(&bad_footer), f.len() as u64, "f").unwrap_err();
    assert!(e.to_string().contains("footer length -5"), "{e}");
    assert!(check_file(&mut Cursor::new(&f[..12]), 12, "f").is_err());
}

/// A stream whose buffers are LZ4_FRAME-compressed (what the Kafka path writes).
fn lz4_stream() -> Vec<u8> {
    let b = batch();
    let mut buf = Vec::new();
    let options = arrow_ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))
        .unwrap();
    let mut w = StreamWriter::try_new_with_options(&mut buf, &b.schema(), options).unwrap();
    w.write(&b).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

/// Where the record batch's first non-empty buffer starts in a stream.
fn first_buffer(bytes: &[u8]) -> (usize, usize) {
    let schema_len = i32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let pos = 8 + schema_len;
    let meta_len = i32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
    let message = arrow_ipc::root_as_message(&bytes[pos + 8..pos + 8 + meta_len]).unwrap();
    let rb = message.header_as_record_batch().unwrap();
    assert!(rb.compression().is_some());
    let buf = rb
        .buffers()
        .unwrap()
        .iter()
        .find(|b| b.length() > 0)
        .unwrap();
    (
        pos + 8 + meta_len + buf.offset() as usize,
        buf.length() as usize,
    )
}

/// A compressed stream passes and decodes; one whose buffer declares a length LZ4 cannot
/// reach (arrow-ipc would allocate it whole first) is refused with where and why.
#[test]
fn a_compressed_buffer_may_not_declare_more_than_lz4_can_make() {
    let s = lz4_stream();
    check_stream(&mut Cursor::new(&s), s.len() as u64, "s").unwrap();
    let got: Vec<RecordBatch> = StreamReader::try_new(Cursor::new(&s), None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(got, vec![batch()]);
    let (at, len) = first_buffer(&s);
    for declared in [i64::MAX, 1 << 40, -7] {
        let mut bad = s.clone();
        bad[at..at + 8].copy_from_slice(&declared.to_le_bytes());
        let e = check_stream(&mut Cursor::new(&bad), bad.len() as u64, "m").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("compressed buffer") && msg.contains(&declared.to_string()),
            "{msg}"
        );
    }
    // At the bound it passes the check (and fails to decode as an arrow error, not an abort).
    let mut edge = s.clone();
    let most = ((len as i64) - 8) * 256 + 64;
    edge[at..at + 8].copy_from_slice(&most.to_le_bytes());
    check_stream(&mut Cursor::new(&edge), edge.len() as u64, "m").unwrap();
    let decoded: Result<Vec<_>, _> = StreamReader::try_new(Cursor::new(&edge), None)
        .unwrap()
        .collect();
    assert!(decoded.is_err() || decoded.unwrap() != vec![batch()]);
}
