//! The stage's hooks: batches of `metrics.norm` in, rows of `fingerprints` out, the end of
//! the input, and the state a restarted stage continues from.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use wfe_contract::columns::DictStrings;
use wfe_contract::norm::{Keyed, NormBatch};
use wfe_contract::state::Split;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

use crate::rows::Rows;
use crate::state::{Answers, State};
use crate::window::cut;
use crate::{Fingerprint, environment_of, reduce};

impl Stage for Fingerprint {
    fn name(&self) -> &'static str {
        "fingerprint"
    }

    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsNorm]
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Fingerprints, Topic::Profiles]
    }

    fn tables(&self) -> Vec<Topic> {
        // Neighbours are searched among every instance's profiles (see `fleet`).
        if self.cfg.neighbours > 0 {
            vec![Topic::Profiles]
        } else {
            Vec::new()
        }
    }

    fn process_table(&mut self, topic: Topic, batch: RecordBatch, ctx: &mut Context) -> Result<()> {
        if topic == Topic::Profiles {
            let n = self.fleet.upsert(
                &batch,
                &self.state.workloads.names,
                self.cfg.learning_steps,
                ctx,
            )?;
            ctx.count("profiles.peers_updated", n as u64);
        }
        Ok(())
    }

    /// A batch with a workload that is new or still in its learning period: its cold rows
    /// borrow from neighbours, which must be the fleet's as of the batch before, as embedded.
    fn needs_tables(&self, _topic: Topic, batch: &RecordBatch) -> bool {
        if self.cfg.neighbours == 0 {
            return false;
        }
        let Ok(names) = DictStrings::new(batch, "workload") else {
            return false;
        };
        let st = &self.state.workloads;
        names.dictionary().iter().flatten().any(|name| {
            st.names
                .find(name)
                .is_none_or(|id| !st.items[id as usize].counted_known)
        })
    }

    fn process_batch(
        &mut self,
        _t: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let nb = NormBatch::new(&batch)?;
        // Own profiles of earlier seqs enter the view before this batch's windows search it.
        self.fleet.advance(ctx.seq());
        let mut rows = Rows::default();
        let mut due = Vec::new();
        let cfg = &self.cfg;
        let (window, hop) = (cfg.window, cfg.hop);
        let mut workloads = std::mem::take(&mut self.state.workloads);
        let changes = &mut self.changes;
        let walked = nb.for_each_dense(&mut workloads, |d| {
            changes.mark(d.id);
            let wk = d.state;
            if let Some(labels) = d.step.label.filter(|l| *l != wk.labels_seen) {
                wk.labels_seen = labels.to_string();
                // Samples without host metadata (another source) leave the environment as is.
                if let Some(env) = environment_of(labels) {
                    wk.environment = Some(env);
                }
            }
            // Reuse the oldest step's buffers for the newest.
            let (mut values, mut raw) = match wk.window.len() == window {
                true => wk
                    .window
                    .pop_front()
                    .map(|(_, v, r, _)| (v, r))
                    .unwrap_or_default(),
                false => Default::default(),
            };
            values.clear();
            values.extend_from_slice(d.scaled);
            raw.clear();
            raw.extend_from_slice(d.raw);
            wk.window.push_back((d.step.time, values, raw, d.observed));
            wk.observed_steps += usize::from(d.observed > 0);
            wk.since_emit += 1;
            if wk.since_emit >= hop && wk.window.len() == window {
                wk.since_emit = 0;
                if let Some(c) = cut(cfg, wk) {
                    due.push((d.id, c));
                }
            }
            Ok(())
        });
        self.state.workloads = workloads;
        let replayed = walked?;
        ctx.event(Event::Dropped {
            kind: "replayed_step",
            count: replayed,
        });
        // Windows were cut at their due steps; profiles, bases and neighbours follow in
        // step order, neighbours from the view as it stood before this batch.
        for (id, c) in due {
            self.window(id, c, &mut rows, ctx);
        }
        if !rows.start.is_empty() {
            out.emit(Topic::Fingerprints, rows.finish()?)?;
        }
        self.publish(out, ctx.seq())?;
        if let Some(retired) = self.retire_idle(ctx)? {
            out.emit(Topic::Profiles, retired)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        // The end of the input: every seq is over.
        self.fleet.advance(None);
        let mut rows = Rows::default();
        // A fleet smaller than `fit_windows`: fit on what there is and release the rows.
        let waiting: Vec<u64> = self
            .state
            .reducers
            .iter()
            .filter(|(_, r)| r.model.is_none())
            .map(|(s, _)| *s)
            .collect();
        for sig in waiting {
            let r = self.state.reducers.get_mut(&sig).expect("listed above");
            if r.windows() >= 2 {
                if let Err(e) = r.refit(self.cfg.variance, self.cfg.max_components) {
                    ctx.count("basis.fit_failed", 1);
                    tracing::warn!("fingerprint basis fit failed: {e}");
                    continue;
                }
                self.prepare_search(sig, ctx);
                self.release(sig, &mut rows);
            }
        }
        // Likewise a learned embedding whose model waits for more windows.
        let untrained: Vec<u64> = self
            .state
            .embedders
            .iter()
            .filter(|(_, e)| e.model.is_none() && !e.failed)
            .map(|(s, _)| *s)
            .collect();
        for sig in untrained {
            let e = self.state.embedders.get_mut(&sig).expect("listed above");
            match e.train_now(&self.cfg.lstm) {
                Ok(Some(report)) => {
                    Self::trained(sig, &report, ctx);
                    self.prepare_search(sig, ctx);
                    self.release(sig, &mut rows);
                }
                Ok(None) => {}
                Err(err) => Self::training_failed(e, sig, &err, ctx),
            }
        }
        // The steps since the last fingerprint are not lost: one more over the latest window.
        let mut ids: Vec<usize> = (0..self.state.workloads.items.len())
            .filter(|&i| {
                let w = &self.state.workloads.items[i];
                w.since_emit > 0 && w.window.len() >= 2
            })
            .collect();
        ids.sort_by(|a, b| {
            self.state.workloads.names.names[*a].cmp(&self.state.workloads.names.names[*b])
        });
        for &id in &ids {
            self.changes.mark(id);
            self.state.workloads.items[id].since_emit = 0;
            if let Some(c) = cut(&self.cfg, &self.state.workloads.items[id]) {
                self.window(id, c, &mut rows, ctx);
            }
        }
        if !rows.start.is_empty() {
            out.emit(Topic::Fingerprints, rows.finish()?)?;
        }
        self.publish(out, None)
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        wfe_contract::state::encode(self.name(), &(&self.state, self.state.answers()))
    }

    /// The whole form: the state and its held windows' answers, or (written before the
    /// answers were kept) the state alone.
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        use wfe_contract::state::decode;
        let (st, answers): (State, Answers) = match decode(self.name(), state) {
            Ok(both) => both,
            Err(_) => (decode(self.name(), state)?, Vec::new()),
        };
        self.state = st;
        self.state.put_answers(self.name(), answers)?;
        // The whole form is an older version's snapshot (services write entries): nothing
        // was staged then.
        self.republish_own(&[]);
        self.changes.mark_all();
        Ok(())
    }

    /// Entries: each workload, each metric set's basis (small, it moves with every window),
    /// its reservoir in runs (a window replaces a row now and then) and embedding (changed when
    /// refitted), each held window's answer (`answer/<place>`), and the rest.
    fn snapshot_split(&self) -> Result<Option<Split>> {
        Ok(self.snapshot_changes(None)?.map(|(split, _)| split))
    }

    /// As [`Stage::snapshot_split`], each workload's entry (`w/`) under its name
    /// ([`Split::put_for`]), and kept where the workload did not change since `since`. The
    /// rest (the metric sets', the held windows') is not per workload: written whole.
    fn snapshot_changes(&self, since: Option<u64>) -> Result<Option<(Split, u64)>> {
        let (st, name) = (&self.state, self.name());
        let mut split = Split::new();
        split.put_shared(name, &(&st.known, &st.held))?;
        let answers = st.answers();
        split.put_items(name, "answer", answers.iter().map(|(i, a)| (i.as_str(), a)))?;
        for (i, (w, wk)) in st.workloads.iter().enumerate() {
            if self.changes.since(i, since) {
                split.put_for(w, |s| s.put(name, "w", w, i as u64, wk))?;
            } else {
                split.keep(w);
            }
        }
        // Own profiles published at a seq still under way: out of the view after a restore too.
        if let Some(seq) = self.fleet.staged_seq {
            let names = self.fleet.staged.keys();
            split.put_unordered(name, STAGED, names.map(|n| (n.as_str(), &seq)))?;
        }
        let heads: Vec<(String, reduce::Reducer)> = st
            .reducers
            .iter()
            .map(|(k, r)| (k.to_string(), r.head()))
            .collect();
        split.put_items(name, "basis", heads.iter().map(|(k, r)| (k.as_str(), r)))?;
        for (id, r) in &st.reducers {
            let runs: Vec<(String, &[Vec<f64>])> = r
                .runs()
                .enumerate()
                .map(|(i, run)| (format!("{id}:{i}"), run))
                .collect();
            split.put_items(
                name,
                "reservoir",
                runs.iter().map(|(k, run)| (k.as_str(), run)),
            )?;
        }
        let embedders: Vec<(String, _)> = st
            .embedders
            .iter()
            .map(|(k, e)| (k.to_string(), e))
            .collect();
        split.put_items(
            name,
            "embed",
            embedders.iter().map(|(k, e)| (k.as_str(), *e)),
        )?;
        Ok(Some((split, self.changes.token())))
    }

    fn restore_split(&mut self, state: Split) -> Result<()> {
        let name = self.name();
        let (known, held) = state.shared(name)?;
        self.state = State {
            workloads: Keyed::from_items(state.items(name, "w")?),
            reducers: with_reservoirs(
                name,
                by_metric_set(name, state.items(name, "basis")?)?,
                state.items(name, "reservoir")?,
            )?,
            embedders: by_metric_set(name, state.items(name, "embed")?)?,
            known,
            held,
        };
        self.state.put_answers(name, state.items(name, "answer")?)?;
        let staged: Vec<(String, i64)> = state.items(name, STAGED)?;
        self.republish_own(&staged);
        self.changes.mark_all();
        Ok(())
    }
}

/// The state entries naming own profiles staged at a seq (see [`crate::fleet`]).
const STAGED: &str = "staged";

/// Each basis given back its reservoir, from runs named `<metric set>:<run>`.
fn with_reservoirs(
    stage: &str,
    mut reducers: BTreeMap<u64, reduce::Reducer>,
    runs: Vec<(String, Vec<Vec<f64>>)>,
) -> Result<BTreeMap<u64, reduce::Reducer>> {
    let mut by_set: BTreeMap<u64, BTreeMap<usize, Vec<Vec<f64>>>> = BTreeMap::new();
    for (key, rows) in runs {
        let parsed = key
            .split_once(':')
            .and_then(|(id, i)| Some((id.parse().ok()?, i.parse().ok()?)));
        let Some((id, i)) = parsed else {
            return Err(Error::state(
                stage,
                format!("reservoir run `{key}` is not `<set>:<run>`"),
            ));
        };
        by_set.entry(id).or_default().insert(i, rows);
    }
    for (id, runs) in by_set {
        let Some(r) = reducers.remove(&id) else {
            return Err(Error::state(
                stage,
                format!("reservoir of metric set {id} without its basis"),
            ));
        };
        let rows = runs.into_values().flatten().collect();
        reducers.insert(id, r.with_reservoir(rows));
    }
    Ok(reducers)
}

/// Items keyed by metric set id, from their entry names.
fn by_metric_set<T>(stage: &str, items: Vec<(String, T)>) -> Result<BTreeMap<u64, T>> {
    items
        .into_iter()
        .map(|(k, v)| {
            k.parse()
                .map(|k| (k, v))
                .map_err(|_| Error::state(stage, format!("metric set `{k}` is not a number")))
        })
        .collect()
}
