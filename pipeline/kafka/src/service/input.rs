//! What a service does with each input message: hold it in its partition's merge of the
//! stage's input topics, release what is due in `(seq, topic)` order ([`wfe_contract::merge`]),
//! run the stage on it, and produce the outputs (or a dead letter), followed by progress marks.
//!
//! Co-partitioning (Kafka Streams' rule): every wfe topic is keyed by workload with the same
//! partition count, and the group's range assignment gives a member the same partition
//! numbers of each input topic, so partition `p` of `forecasts`, `metrics.norm` and
//! `fingerprints` hold the same workloads and meet in one merge.
//!
//! A whole-fleet stage ([`wfe_contract::Stage::whole_fleet`]) has one part whose merge
//! inputs are every partition of every input topic. In a replay their seqs are the source's
//! batches, the same numbering in every partition, so the merge gives the one instance the
//! order the embedded runner gives; live, a partition's seqs are its own `metrics.raw`
//! offsets, which do not compare across partitions, so live messages go in arrival order.

use std::time::Instant;

use rdkafka::message::{BorrowedMessage, Message};
use wfe_contract::merge::{END, Seq};
use wfe_contract::{Error, Result, VecCollector};

use super::shared::{Core, Held, Part};
use crate::codec::{self, Encoded, HeaderMap, encode_outputs, header};

impl Core {
    /// Handles one input message: held, then whatever is due released.
    pub(super) fn handle(&mut self, msg: &BorrowedMessage<'_>) -> Result<()> {
        let p = msg.partition();
        let Some((i, key)) = self.input_of(msg.topic(), p) else {
            return Ok(()); // not subscribed to: cannot happen, and nothing to do with it
        };
        self.report.messages_in += 1;
        metrics::counter!("wfe_kafka_messages_in_total", "stage" => self.name.clone()).increment(1);
        let mut part = match self.parts.remove(&key) {
            Some(part) => part,
            None => self.load(key)?,
        };
        self.accept(&mut part, i, msg);
        let r = self.release(&mut part, key);
        self.parts.insert(key, part);
        r.inspect_err(
            |e| tracing::error!(stage = %self.name, "{}/{p}@{}: {e}", msg.topic(), msg.offset()),
        )
    }

    /// Puts one message of input `i` into its partition's merge.
    fn accept(&mut self, part: &mut Part, i: usize, msg: &BorrowedMessage<'_>) {
        let offset = msg.offset();
        if offset < part.read[i] {
            self.ctx.count("dropped.already_in_snapshot", 1);
            return;
        }
        part.read[i] = offset + 1;
        part.dirty = true;
        let headers = HeaderMap::from_kafka(msg.headers());
        part.source_seq |= headers.is_source_seq();
        if headers.is_end_of_stream() {
            part.merge.close(i);
            part.ending = true;
            return;
        }
        // A whole-fleet part takes live messages in arrival order (see the module's tour):
        // their seqs, and the marks that carry them, say nothing across partitions.
        let arrival = self.whole.is_some() && !headers.is_source_seq();
        if headers.is_progress() {
            if let Some(seq) = headers.seq().filter(|_| !arrival) {
                part.merge.progress(i, seq);
            }
            return;
        }
        // A message from outside the pipeline (metrics.raw) has no seq: its offset is one,
        // and it is complete by itself.
        let (seq, whole) = match headers.seq() {
            _ if arrival => (part.arrivals.saturating_add(1), true),
            Some(s) => (s, false),
            None => (offset, true),
        };
        part.arrivals = part.arrivals.max(seq);
        part.merge.reopen(i, seq);
        let held = Held {
            offset,
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers,
            since: Instant::now(),
            decoded: None,
        };
        part.held_bytes += held.bytes();
        part.merge.push(i, seq, held);
        if arrival {
            // Whatever comes next on any input arrives later, with a higher seq.
            (0..self.inputs.len()).for_each(|j| part.merge.progress(j, seq));
        } else if whole {
            part.merge.progress(i, seq);
        }
    }

    /// Runs the stage on every held message that is due; at the end of every input, flushes
    /// it and passes the end-of-stream marker on.
    pub(super) fn release(&mut self, part: &mut Part, p: i32) -> Result<()> {
        let mut forced = 0;
        loop {
            if !self.tables_ready(part, p) {
                break;
            }
            let next = match part.merge.pop() {
                Some(m) => Some(m),
                None if self.overdue(part) => {
                    if forced == 0 {
                        // Said before the first one goes, once per call: a long run of
                        // forced messages logs one line.
                        tracing::warn!(stage = %self.name, partition = p, held = part.merge.held(), bytes = part.held_bytes, "an input's producer is behind or gone: released the oldest held messages out of order");
                    }
                    forced += 1;
                    self.ctx.count("merge.forced", 1);
                    part.merge.force()
                }
                None => None,
            };
            let Some((i, seq, held)) = next else { break };
            part.held_bytes -= held.bytes();
            self.process(part, p, i, seq, held)?;
        }
        if part.ending && part.merge.through() == END {
            part.ending = false;
            self.end_of_stream(part, p)?;
        }
        Ok(())
    }

    /// Whether the least held message must go on although an earlier one may still come:
    /// it waited `kafka.merge_wait_ms`, or the partition holds `kafka.merge_buffer_bytes`.
    fn overdue(&self, part: &Part) -> bool {
        let Some(head) = part.merge.peek() else {
            return false;
        };
        head.since.elapsed() >= self.kafka.merge_wait()
            || part.held_bytes > self.kafka.merge_buffer_bytes
    }

    /// Runs the stage on one released message of input `i`.
    fn process(
        &mut self,
        part: &mut Part,
        p: i32,
        i: usize,
        seq: Seq,
        mut held: Held,
    ) -> Result<()> {
        let input = self.inputs[i].clone();
        let (q, topic, name) = (input.partition_of(p), input.topic, input.name);
        // The tables as they stood before this input's seq (all of them outside a replay).
        let before = held.headers.is_source_seq().then_some(seq);
        self.hand_over_before(part, before);
        self.ctx.set_seq(before);
        let trace = held
            .headers
            .get(header::TRACE)
            .map(str::to_string)
            .unwrap_or_else(|| codec::trace_id(&name, q, held.offset));
        let mut out = VecCollector::new();
        let at = format!("stage {}", self.name);
        let t = Instant::now();
        let decoded = match held.decoded.take() {
            Some(batch) => Ok(batch),
            None => codec::decode(topic, &held.headers, held.payload.as_deref()),
        };
        let result = decoded.and_then(|batch| {
                metrics::counter!("wfe_rows_in_total", "stage" => self.name.clone(), "topic" => topic.to_string())
                    .increment(batch.num_rows() as u64);
                wfe_contract::panic::contain(&at, || {
                    part.stage
                        .process_batch(topic, batch, &mut self.ctx, &mut out)
                })
            });
        metrics::histogram!("wfe_batch_seconds", "stage" => self.name.clone())
            .record(t.elapsed().as_secs_f64());
        // Outputs are encoded before any is sent: an output row over the message limit
        // dead-letters the input that made it (replayable once the limit is raised) instead
        // of ending the service, which would fail again on the same input.
        match result.and_then(|_| self.encode(out)) {
            Ok(encoded) => {
                let source = held.headers.is_source_seq();
                self.produce_encoded(encoded, p, seq, source, &trace)
            }
            Err(e) if !e.is_retryable() => self.dead_letter(&name, q, held, &e),
            Err(e) => Err(e),
        }
    }

    /// Every input has ended: flush the stage and pass the marker on, so downstream
    /// partitions finish too.
    fn end_of_stream(&mut self, part: &mut Part, p: i32) -> Result<()> {
        // The flush sees what the others made before their ends, as the embedded flush does.
        self.hand_over_before(part, Some(END));
        let mut out = VecCollector::new();
        let at = format!("stage {}", self.name);
        let flushed =
            wfe_contract::panic::contain(&at, || part.stage.flush(&mut self.ctx, &mut out))
                .and_then(|_| self.encode(out));
        let trace = format!("{}-end-{p}", self.name);
        match flushed {
            Ok(encoded) => self.produce_encoded(encoded, p, END, part.source_seq, &trace)?,
            // A flush that panics or makes an unsendable row is logged and counted; the
            // marker still travels on, so downstream partitions finish.
            Err(e) if !e.is_retryable() => self.failed_without_input(p, "flush", &e),
            Err(e) => return Err(e),
        }
        // The marker says whether the seqs were a replay's (see `Sender::end_of_stream`).
        let mark = HeaderMap::end_of_stream(&self.name);
        let mark = if part.source_seq {
            mark.with_source_seq()
        } else {
            mark
        };
        self.mark_outputs(p, mark)?;
        part.sent = END;
        self.ctx.count("end_of_stream", 1);
        Ok(())
    }

    /// Progress marks on every output of every partition whose stage got further than it
    /// last said. The serve loop calls it when the input runs dry, every 20 ms while input
    /// flows, and before a commit; not after every message (a data message of seq s already
    /// says all before s is out).
    pub(super) fn send_progress(&mut self) -> Result<()> {
        let due: Vec<(i32, Seq, bool)> = self
            .parts
            .iter()
            .filter(|(_, part)| part.merge.through() > part.sent && part.merge.through() != END)
            .map(|(p, part)| (*p, part.merge.through(), part.source_seq))
            .collect();
        for (p, through, source) in due {
            let mark = HeaderMap::progress(&self.name, through);
            let mark = if source { mark.with_source_seq() } else { mark };
            self.mark_outputs(p, mark)?;
            if let Some(part) = self.parts.get_mut(&p) {
                part.sent = through;
            }
            self.ctx.count("progress_marks", 1);
        }
        Ok(())
    }

    /// The timer hook of every partition's stage (the actuator reads its notice queue), and
    /// held messages that waited too long released: what comes of it goes to that
    /// partition's outputs, committed with the next commit.
    pub(super) fn tick(&mut self) -> Result<()> {
        let parts: Vec<i32> = self.parts.keys().copied().collect();
        for p in parts {
            let Some(mut part) = self.parts.remove(&p) else {
                continue;
            };
            let released = self.release(&mut part, p);
            let mut out = VecCollector::new();
            let at = format!("stage {}", self.name);
            let r =
                wfe_contract::panic::contain(&at, || part.stage.on_tick(&mut self.ctx, &mut out));
            part.dirty |= !out.batches.is_empty();
            let (seq, source) = (part.merge.through(), part.source_seq);
            self.parts.insert(p, part);
            released?;
            let trace = format!("{}-tick-{p}", self.name);
            let sent = r.and_then(|_| self.encode(out));
            match sent.and_then(|encoded| self.produce_encoded(encoded, p, seq, source, &trace)) {
                Ok(()) => {}
                // A tick has no input message to dead-letter: a bug or an unsendable row is
                // logged and counted, and the partition goes on (ending the service would
                // only meet the same tick again after the restart).
                Err(e) if !e.is_retryable() => self.failed_without_input(p, "tick", &e),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A control message (no data) on partition `p` of every output (on every partition of
    /// them, from a whole-fleet part).
    fn mark_outputs(&mut self, p: i32, h: HeaderMap) -> Result<()> {
        for (t, topic) in self.outputs.clone() {
            let all = self.whole.as_ref().and_then(|w| w.out_partitions.get(&t));
            for q in all.map_or(p..p + 1, |n| 0..*n) {
                self.send(&topic, Some(q), None, Some(&[]), h.clone())?;
            }
        }
        Ok(())
    }

    /// A stage's output batches as messages, each with the partition it goes to (none: the
    /// part's own; a whole-fleet part's go to each workload's partition).
    fn encode(&self, out: VecCollector) -> Result<Vec<Encoded>> {
        let partitions = self.whole.as_ref().map(|w| &w.out_partitions);
        encode_outputs(out, self.kafka.max_message_bytes, partitions)
    }

    /// A hook with no input message to dead-letter (`flush`, `tick`) failed for good: logged
    /// and counted, and the partition goes on.
    fn failed_without_input(&mut self, p: i32, hook: &str, e: &Error) {
        tracing::error!(stage = %self.name, partition = p, "{hook} failed: {e}");
        metrics::counter!("wfe_stage_errors_total", "stage" => self.name.clone(), "kind" => e.kind())
            .increment(1);
        self.ctx.count(&format!("{hook}_failed"), 1);
    }

    fn produce_encoded(
        &mut self,
        encoded: Vec<Encoded>,
        p: i32,
        seq: Seq,
        source: bool,
        trace: &str,
    ) -> Result<()> {
        for (topic, rows, messages) in encoded {
            metrics::counter!("wfe_rows_out_total", "stage" => self.name.clone(), "topic" => topic.to_string())
                .increment(rows);
            let name = self.kafka.topic(topic);
            for (to, key, value) in messages {
                let mut h = HeaderMap::data(topic, &self.name, trace);
                h.set(header::SEQ, seq.to_string());
                if source {
                    h.set(header::SOURCE_SEQ, "1");
                }
                self.send(
                    &name,
                    Some(to.unwrap_or(p)),
                    key.as_deref().map(str::as_bytes),
                    Some(&value),
                    h,
                )?;
                self.report.messages_out += 1;
            }
        }
        Ok(())
    }

    fn dead_letter(&mut self, topic: &str, p: i32, held: Held, e: &Error) -> Result<()> {
        let origin = format!("{topic}/{p}/{}", held.offset);
        self.ctx.event(wfe_contract::Event::Rejected {
            kind: "dead_letter",
            location: &origin,
            message: &e.to_string(),
            count: 1,
        });
        let mut h = held.headers;
        h.set(header::ERROR, e.to_string());
        h.set(header::ORIGIN, &origin);
        h.set(header::STAGE, &self.name);
        let dlq = self.dlq.clone();
        let value = held.payload.unwrap_or_default();
        self.send(&dlq, None, held.key.as_deref(), Some(&value), h)?;
        self.report.dead_letters += 1;
        metrics::counter!("wfe_dead_letters_total", "stage" => self.name.clone()).increment(1);
        metrics::counter!("wfe_stage_errors_total", "stage" => self.name.clone(), "kind" => e.kind())
            .increment(1);
        Ok(())
    }
}
