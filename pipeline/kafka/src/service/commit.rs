//! The commit point of a stage service: outputs acknowledged, each changed partition's
//! snapshot written, then the input offsets the snapshots hold committed (see the service's
//! tour in `service.rs` for why in that order, and why a periodic commit is pipelined).

use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use wfe_contract::{Error, Result};

use super::shared::{Core, Unsettled};
use super::{Ctx, TXN_TIMEOUT};
use crate::broker::kafka_error;

impl Core {
    /// The commit point, whole: outputs acknowledged, snapshots written and acknowledged,
    /// input offsets committed. Before partitions are revoked and at shutdown.
    pub(super) fn commit<C: Consumer<Ctx>>(&mut self, consumer: &C) -> Result<()> {
        self.commit_with(consumer, true)
    }

    /// The periodic commit point, pipelined (at least once): the outputs are acknowledged and
    /// the snapshots sent, but their acknowledgement (and the input offsets they hold) is
    /// settled at the next commit point, after that one's wait for its outputs, which covers
    /// them. The service reads on meanwhile. A crash in between leaves what a crash during a
    /// whole commit's snapshot wait leaves: the newest complete snapshot, or the one before.
    pub(super) fn commit_periodic<C: Consumer<Ctx>>(&mut self, consumer: &C) -> Result<()> {
        let whole = self.exactly_once || self.ephemeral;
        self.commit_with(consumer, whole)
    }

    fn commit_with<C: Consumer<Ctx>>(&mut self, consumer: &C, whole: bool) -> Result<()> {
        self.send_progress()?;
        if self.ephemeral {
            // Nothing to keep: the next start reads its inputs from their beginning.
            self.out.flush()?;
            self.parts.values_mut().for_each(|p| p.dirty = false);
            return Ok(());
        }
        let dirty: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, p)| p.dirty)
            .map(|(k, _)| *k)
            .collect();
        if dirty.is_empty() && self.unsettled.is_none() {
            return Ok(());
        }
        // Where a commit's time goes (the service reads nothing meanwhile), in milliseconds
        // per phase: outputs acknowledged, state entries made and acknowledged, offsets.
        let mut phase = Instant::now();
        if !self.exactly_once {
            // The outputs, and the previous commit's snapshots sent after theirs.
            self.out.flush()?;
            self.count_ms("commit.outputs_ms", &mut phase);
            self.settle(consumer, whole, &mut phase)?;
        }
        if dirty.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &dirty {
            self.write_snapshot(p)?;
            for (i, input) in self.inputs.iter().enumerate() {
                let next = self.parts[&p].next(i);
                if next >= 0 {
                    tpl.add_partition_offset(
                        &input.name,
                        input.partition_of(p),
                        Offset::Offset(next),
                    )
                    .map_err(|e| kafka_error("offsets", e))?;
                }
            }
        }
        for &p in &dirty {
            if let Some(part) = self.parts.get_mut(&p) {
                part.dirty = false;
            }
        }
        if self.exactly_once {
            let meta = consumer
                .group_metadata()
                .ok_or_else(|| Error::state(&self.name, "no consumer group metadata"))?;
            let r = self
                .out
                .producer
                .send_offsets_to_transaction(&tpl, &meta, TXN_TIMEOUT)
                .and_then(|_| self.out.producer.commit_transaction(TXN_TIMEOUT));
            self.in_txn = false;
            if let Err(e) = r {
                let _ = self.out.producer.abort_transaction(TXN_TIMEOUT);
                return Err(kafka_error(
                    "commit transaction (aborted; a restart redoes it)",
                    e,
                ));
            }
            // Committed with the transaction: durable now.
            self.unsettled = Some(Unsettled {
                offsets: tpl,
                parts: dirty,
            });
            self.mark_durable();
            self.count_commit();
            return Ok(());
        }
        self.unsettled = Some(Unsettled {
            offsets: tpl,
            parts: dirty,
        });
        self.count_commit();
        if whole {
            self.out.flush()?;
            self.count_ms("commit.state_ms", &mut phase);
            self.settle(consumer, true, &mut phase)?;
        }
        Ok(())
    }

    /// The snapshots of the last commit point are acknowledged (the caller has flushed):
    /// their slots become the durable ones and the input offsets they hold are committed.
    /// The snapshots already hold those offsets (input below a snapshot's offset is
    /// skipped), so a commit that fails (coordinator away, group rebalancing) loses nothing:
    /// it is said, and the next commit point commits newer ones.
    fn settle<C: Consumer<Ctx>>(
        &mut self,
        consumer: &C,
        sync: bool,
        phase: &mut Instant,
    ) -> Result<()> {
        let Some(offsets) = self.mark_durable() else {
            return Ok(());
        };
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        let committed = consumer.commit(&offsets, mode);
        self.count_ms("commit.offsets_ms", phase);
        if let Err(e) = committed {
            self.ctx.count("commit.deferred", 1);
            tracing::warn!(stage = %self.name, "offset commit deferred: {e}; the snapshots hold the position");
        }
        Ok(())
    }

    /// Marks the last commit point's snapshots durable; returns the offsets they hold.
    fn mark_durable(&mut self) -> Option<TopicPartitionList> {
        let Unsettled { offsets, parts } = self.unsettled.take()?;
        for p in parts {
            if let Some(part) = self.parts.get_mut(&p)
                && let Some(slot) = part.pending.take()
            {
                part.durable = Some(slot);
            }
        }
        Some(offsets)
    }

    fn count_commit(&mut self) {
        self.report.commits += 1;
        metrics::counter!("wfe_commits_total", "stage" => self.name.clone()).increment(1);
    }

    /// Counts the milliseconds since `since` under `name`, and restarts `since`.
    fn count_ms(&mut self, name: &str, since: &mut Instant) {
        self.ctx.count(name, since.elapsed().as_millis() as u64);
        *since = Instant::now();
    }
}
