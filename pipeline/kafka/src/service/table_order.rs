//! Tables read in seq order beside the inputs, in a replay: what lets a fleet of services
//! decide what one process decides when a stage's output depends on what the other
//! instances made (fingerprint's neighbours, searched among the whole fleet's profiles).
//!
//! A table row carries the source seq it was made at. Each partition keeps the rows it has not
//! been handed yet and hands over, before an input of seq `s`, every row of a seq below `s`:
//! the stage sees the table as the embedded run's stage sees its own view, everything made
//! from the batches before this one and nothing from this one or later. When the stage says
//! that an input needs the tables ([`wfe_contract::Stage::needs_tables`]: a new workload's
//! first windows), the partition also waits until every other table partition has said it
//! is through `s - 1` (its producer's data and progress marks): at most
//! `kafka.merge_wait_ms`, after which the input goes on with what has arrived
//! (`tables.forced` counts it). Outside a replay (seqs that are one partition's offsets) rows
//! are handed over as they come.

use wfe_contract::Result;
use wfe_contract::merge::Seq;

use super::shared::{Core, Part};
use super::tables::Row;
use crate::codec;

impl Core {
    /// New rows of the tables, to every partition's stage (a replay's rows queued for their
    /// turn); partitions that waited for them are released. Returns whether any table message
    /// came (then progress marks may be due: a released input moves a partition on).
    pub(super) fn poll_tables(&mut self) -> Result<bool> {
        let Some(tables) = self.tables.as_mut() else {
            return Ok(false);
        };
        let (rows, any) = tables.poll();
        if !any {
            return Ok(false);
        }
        let parts: Vec<i32> = self.parts.keys().copied().collect();
        for p in parts {
            let Some(mut part) = self.parts.remove(&p) else {
                continue;
            };
            // Rows the partition's history read when it was assigned are queued already.
            for row in &rows {
                if !part.tables.read_already(&row.at) {
                    self.table_row(&mut part, row.clone());
                }
            }
            let r = self.release(&mut part, p);
            self.parts.insert(p, part);
            r?;
        }
        Ok(true)
    }

    /// One table row for a partition's stage: queued when it carries a source seq, else
    /// handed over now.
    pub(super) fn table_row(&mut self, part: &mut Part, row: Row) {
        let Some(seq) = row.seq else {
            self.hand_over(part, row);
            return;
        };
        let early = part.tables.push(seq, row, self.kafka.merge_buffer_bytes);
        self.ctx.count("tables.rows_early", early.len() as u64);
        for row in early {
            self.hand_over(part, row);
        }
    }

    /// Hands the stage every queued row of a seq below `seq` (None: all of them).
    pub(super) fn hand_over_before(&mut self, part: &mut Part, seq: Option<Seq>) {
        for row in part.tables.before(seq) {
            self.hand_over(part, row);
        }
    }

    fn hand_over(&mut self, part: &mut Part, row: Row) {
        let at = format!("stage {}", self.name);
        let topic = row.topic;
        let r = wfe_contract::panic::contain(&at, || {
            part.stage.process_table(topic, row.batch, &mut self.ctx)
        });
        if let Err(e) = r {
            // A table row is another instance's output: one that cannot be used is logged
            // and counted, and the stage goes on without it.
            self.ctx.count("table_rows_failed", 1);
            tracing::warn!(stage = %self.name, "table row of `{topic}`: {e}");
        }
    }

    /// Whether the partition's next input may go to the stage as far as the tables go: yes
    /// unless it is a replay's input that the stage says needs the tables and another table
    /// partition is not through the seq before it yet (for at most `kafka.merge_wait_ms`).
    pub(super) fn tables_ready(&mut self, part: &mut Part, p: i32) -> bool {
        let Some(tables) = &self.tables else {
            return true;
        };
        let through = tables.through(p);
        let Some((i, seq, held)) = part.merge.head_mut() else {
            return true;
        };
        if !held.headers.is_source_seq() || through >= seq.saturating_sub(1) {
            return true;
        }
        if held.since.elapsed() >= self.kafka.merge_wait() {
            self.ctx.count("tables.forced", 1);
            tracing::warn!(stage = %self.name, partition = p, seq, through, "the tables' producers are behind or gone: went on without their rows");
            return true;
        }
        let topic = self.inputs[i].topic;
        let first = held.decoded.is_none();
        if first {
            match codec::decode(topic, &held.headers, held.payload.as_deref()) {
                Ok(batch) => held.decoded = Some(batch),
                // Undecodable: its turn dead-letters it.
                Err(_) => return true,
            }
        }
        let Some(batch) = held.decoded.as_ref() else {
            return true;
        };
        let at = format!("stage {}", self.name);
        let needs = wfe_contract::panic::contain(&at, || Ok(part.stage.needs_tables(topic, batch)));
        if matches!(needs, Ok(true)) {
            if first {
                self.ctx.count("tables.waits", 1);
            }
            return false;
        }
        true
    }
}
