//! Arrow IPC from outside, checked before arrow-ipc decodes it.
//!
//! arrow-ipc trusts the lengths written inside a stream or file: a message's metadata length,
//! its `bodyLength`, a file's footer length and the blocks the footer lists. It allocates what
//! they declare before reading (`MutableBuffer::from_len_zeroed(bodyLength as usize)`), so a
//! negative or huge length aborts the process on a failed allocation, which no panic handler
//! can catch, and a buffer that points past its body panics. Kafka payloads, files handed to
//! ingest and recordings handed to `wfe replay` come from outside, so each is walked here
//! first: every length must be non-negative and fit in the bytes that actually follow (the
//! payload's or the file's length is known). What passes can still be wrong in other ways;
//! those surface as arrow errors, and any panic left is contained by the caller
//! ([`crate::panic::contain`]).

use std::io::{Read, Seek, SeekFrom};

use arrow_ipc::{Block, CompressionType, MessageHeader};

use crate::{Error, Result};

/// The marker before each message's metadata length (since Arrow 0.15).
const CONTINUATION: u32 = 0xFFFF_FFFF;
/// `ARROW1` and its padding at the start of an IPC file, and `ARROW1` at its end.
const MAGIC: &[u8; 6] = b"ARROW1";
/// Bytes after the footer: its length (4) and the magic (6).
const TRAILER: u64 = 10;
/// Bytes before the first message of a file: the magic and 2 bytes of padding.
const HEADER: u64 = 8;

/// Whether the bytes at the reader's start are an IPC file (else: a stream, or neither).
pub fn is_file<R: Read + Seek>(r: &mut R) -> Result<bool> {
    let mut magic = [0u8; 6];
    let start = r.stream_position().map_err(io)?;
    let n = read_up_to(r, &mut magic)?;
    r.seek(SeekFrom::Start(start)).map_err(io)?;
    Ok(n == 6 && &magic == MAGIC)
}

/// Checks an IPC stream of `len` bytes from the reader's position; leaves the position there.
/// `what` names the source in the error (a file, or a message's topic and offset).
pub fn check_stream<R: Read + Seek>(r: &mut R, len: u64, what: &str) -> Result<()> {
    let start = r.stream_position().map_err(io)?;
    let mut pos = start;
    while let Some(next) = check_message(r, pos, start + len, what)? {
        pos = next;
    }
    r.seek(SeekFrom::Start(start)).map_err(io)?;
    Ok(())
}

/// Checks an IPC file of `len` bytes: its footer, and every block the footer lists.
pub fn check_file<R: Read + Seek>(r: &mut R, len: u64, what: &str) -> Result<()> {
    let bad = |m: String| Error::bad_input(what, m);
    if len < HEADER + TRAILER {
        return Err(bad(format!(
            "{len} bytes is too short for an Arrow IPC file"
        )));
    }
    let mut trailer = [0u8; 10];
    r.seek(SeekFrom::Start(len - TRAILER)).map_err(io)?;
    r.read_exact(&mut trailer).map_err(io)?;
    if &trailer[4..] != MAGIC {
        return Err(bad("no ARROW1 magic at the end of the file".into()));
    }
    let footer_len = i32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let room = len - TRAILER - HEADER;
    if footer_len <= 0 || footer_len as u64 > room {
        return Err(bad(format!(
            "footer length {footer_len} does not fit the {room} bytes before the trailer"
        )));
    }
    let footer_start = len - TRAILER - footer_len as u64;
    let mut footer = vec![0u8; footer_len as usize];
    r.seek(SeekFrom::Start(footer_start)).map_err(io)?;
    r.read_exact(&mut footer).map_err(io)?;
    let footer = arrow_ipc::root_as_footer(&footer)
        .map_err(|e| bad(format!("footer is not an Arrow footer: {e}")))?;
    let blocks = footer
        .dictionaries()
        .into_iter()
        .flatten()
        .chain(footer.recordBatches().into_iter().flatten());
    for (i, block) in blocks.enumerate() {
        check_block(r, block, footer_start, what).map_err(|e| match e {
            Error::BadInput { location, message } => Error::BadInput {
                location,
                message: format!("block {i}: {message}"),
            },
            other => other,
        })?;
    }
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(())
}

/// One block of a file: inside the file's data, and its message consistent with it.
fn check_block<R: Read + Seek>(r: &mut R, b: &Block, end: u64, what: &str) -> Result<()> {
    let (offset, meta, body) = (b.offset(), b.metaDataLength(), b.bodyLength());
    let fits = offset >= HEADER as i64
        && meta > 0
        && body >= 0
        && (offset as u64)
            .checked_add(meta as u64)
            .and_then(|x| x.checked_add(body as u64))
            .is_some_and(|x| x <= end);
    if !fits {
        return Err(Error::bad_input(
            what,
            format!(
                "offset {offset}, metadata {meta} and body {body} bytes do not fit the file's {end} bytes of data"
            ),
        ));
    }
    let block_end = offset as u64 + meta as u64 + body as u64;
    check_message(r, offset as u64, block_end, what).map(|_| ())
}

/// Checks the message at `pos` (before `end`): its metadata is a readable Arrow message and
/// its body and buffers fit. Returns where the next message starts, or `None` at the end of
/// the stream (an end marker or the end of the bytes).
fn check_message<R: Read + Seek>(r: &mut R, pos: u64, end: u64, what: &str) -> Result<Option<u64>> {
    let bad = |m: String| Error::bad_input(format!("{what}, byte {pos}"), m);
    if pos >= end {
        return Ok(None);
    }
    r.seek(SeekFrom::Start(pos)).map_err(io)?;
    let mut at = pos;
    let mut word = [0u8; 4];
    let mut next_word = |r: &mut R, at: &mut u64| -> Result<u32> {
        if end - *at < 4 {
            return Err(bad(format!("{} bytes left, a length takes 4", end - *at)));
        }
        r.read_exact(&mut word).map_err(io)?;
        *at += 4;
        Ok(u32::from_le_bytes(word))
    };
    let mut meta_len = next_word(r, &mut at)?;
    if meta_len == CONTINUATION {
        meta_len = next_word(r, &mut at)?;
    }
    let meta_len = meta_len as i32;
    if meta_len == 0 {
        return Ok(None); // the end-of-stream marker
    }
    if meta_len < 0 || meta_len as u64 > end - at {
        return Err(bad(format!(
            "metadata length {meta_len} does not fit the {} bytes left",
            end - at
        )));
    }
    let mut meta = vec![0u8; meta_len as usize];
    r.read_exact(&mut meta).map_err(io)?;
    at += meta_len as u64;
    let message = arrow_ipc::root_as_message(&meta)
        .map_err(|e| bad(format!("metadata is not an Arrow message: {e}")))?;
    let body = message.bodyLength();
    if body < 0 || body as u64 > end - at {
        return Err(bad(format!(
            "body length {body} does not fit the {} bytes left",
            end - at
        )));
    }
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    let codec = batch.and_then(|b| b.compression()).map(|c| c.codec());
    if let Some(c) = codec
        && c != CompressionType::LZ4_FRAME
    {
        return Err(bad(format!(
            "body compressed with {c:?}; this build reads LZ4_FRAME or uncompressed"
        )));
    }
    for (i, buf) in batch
        .and_then(|b| b.buffers())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let fits = buf.offset() >= 0
            && buf.length() >= 0
            && buf
                .offset()
                .checked_add(buf.length())
                .is_some_and(|x| x <= body);
        if !fits {
            return Err(bad(format!(
                "buffer {i} (offset {}, length {}) is outside the body of {body} bytes",
                buf.offset(),
                buf.length()
            )));
        }
        if codec.is_some() && buf.length() > 0 {
            check_declared(r, at + buf.offset() as u64, buf.length() as u64)
                .map_err(|m| bad(format!("compressed buffer {i}: {m}")))?;
        }
    }
    Ok(Some(at + body as u64))
}

/// What LZ4 can expand to at most, per compressed byte (a match of 255 more bytes costs one).
const LZ4_MOST_EXPANSION: u64 = 256;

/// A compressed buffer of `len` bytes at `pos`: its first 8 bytes declare its length
/// uncompressed (-1: stored as is), which arrow-ipc allocates before it decompresses. A
/// length LZ4 cannot reach from the bytes that follow is refused, so a message can never
/// make the reader allocate more than [`LZ4_MOST_EXPANSION`] times its own size.
fn check_declared<R: Read + Seek>(
    r: &mut R,
    pos: u64,
    len: u64,
) -> std::result::Result<(), String> {
    if len < 8 {
        return Err(format!("{len} bytes; its length prefix takes 8"));
    }
    let mut prefix = [0u8; 8];
    r.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
    r.read_exact(&mut prefix).map_err(|e| e.to_string())?;
    let declared = i64::from_le_bytes(prefix);
    let most = (len - 8)
        .saturating_mul(LZ4_MOST_EXPANSION)
        .saturating_add(64);
    if declared == -1 || (0..=most as i64).contains(&declared) {
        return Ok(());
    }
    Err(format!(
        "declares {declared} bytes uncompressed, where LZ4 makes at most {most} of its {} bytes",
        len - 8
    ))
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(n)
}

fn io(e: std::io::Error) -> Error {
    Error::io("Arrow IPC", e)
}

#[cfg(test)]
mod tests;
