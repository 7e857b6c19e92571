//! What the stage holds: per workload its window, profile and allocation sums; the windows
//! waiting for their metric set's first basis; per metric set the PCA reducer or learned
//! embedder.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wfe_contract::norm::{HasSlots, Keyed, Slots};

use crate::fleet::Near;
use crate::{embed, reduce};

/// One step of a workload's window: time, scaled values, raw values, observed count.
pub(crate) type WindowStep = (i64, Vec<f64>, Vec<f64>, usize);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Workload {
    pub(crate) slots: Slots,
    pub(crate) window: VecDeque<WindowStep>,
    pub(crate) since_emit: usize,
    pub(crate) observed_steps: usize,
    /// Counted in `State::known` under `signature` (past its learning period).
    pub(crate) counted_known: bool,
    /// Metric set this workload's features belong to (hash of its metric names).
    pub(crate) signature: u64,
    /// Sum of its window features, and how many windows.
    pub(crate) profile_sum: Vec<f64>,
    pub(crate) windows: u64,
    /// Sum of its per-window allocations (raw units, per metric).
    pub(crate) alloc_sum: Vec<f64>,
    /// Its profile rotated into basis `.0` of its metric set (uncentred, see [`Space`]): a
    /// row's `profile` reads this instead of projecting the profile at every row.
    pub(crate) projected: Option<(u32, Vec<f64>)>,
    /// Sum and count of its window embeddings (`method = "lstm"`).
    pub(crate) embed_sum: Vec<f64>,
    pub(crate) embeds: u64,
    /// Its environment: the `env.*` labels last seen on its samples (see [`environment_of`]).
    pub(crate) environment: Option<String>,
    /// The last label set read, so that a workload's labels are parsed only when they change.
    #[serde(skip)]
    pub(crate) labels_seen: String,
}

impl HasSlots for Workload {
    fn slots_mut(&mut self) -> &mut Slots {
        &mut self.slots
    }
}

impl Workload {
    pub(crate) fn profile(&self) -> Option<Vec<f64>> {
        (self.windows > 0).then(|| {
            self.profile_sum
                .iter()
                .map(|v| v / self.windows as f64)
                .collect()
        })
    }
    pub(crate) fn allocation(&self) -> Vec<f64> {
        let n = self.windows.max(1) as f64;
        self.alloc_sum.iter().map(|v| v / n).collect()
    }
}

/// Per held window (by its place in [`State::held`]), the answer it was cut with.
pub(crate) type Answers = Vec<(String, (Vec<Near>, Vec<f64>))>;

/// A window waiting for the first basis (or model) of its metric set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Held {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) workload: usize,
    pub(crate) features: Vec<f64>,
    /// Raw window for the learned embedding, until it is embedded (then empty).
    pub(crate) raw: Vec<f32>,
    /// The learned embedding, once made.
    pub(crate) embedding: Option<Vec<f64>>,
    pub(crate) n: i64,
    pub(crate) cold: bool,
    /// Its neighbours (searched in the view of its batch) and its workload's allocation when
    /// the window was cut, so a row held for its basis answers as it would have at once. Kept
    /// in a snapshot beside the held windows ([`Answers`]: a field here would make every state
    /// written before it unreadable); a window restored from a state without them answers
    /// from when it is released.
    #[serde(skip)]
    pub(crate) answer: Option<(Vec<Near>, Vec<f64>)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) workloads: Keyed<Workload>,
    pub(crate) reducers: BTreeMap<u64, reduce::Reducer>,
    /// Per metric set, the learned embedding (`method = "lstm"`).
    pub(crate) embedders: BTreeMap<u64, embed::Embedder>,
    /// Per metric set, own workloads past their learning period, kept as windows arrive (the
    /// neighbour search counts the published view's instead; this stays in the snapshot's
    /// shared entry, whose format it is part of).
    pub(crate) known: BTreeMap<u64, usize>,
    pub(crate) held: Vec<Held>,
}

impl State {
    /// The answers of the held windows that have one, keyed by their place.
    pub(crate) fn answers(&self) -> Answers {
        (self.held.iter().enumerate())
            .filter_map(|(i, h)| Some((i.to_string(), h.answer.clone()?)))
            .collect()
    }

    /// Gives the restored held windows their answers; one that names no held window is a
    /// state that does not hang together.
    pub(crate) fn put_answers(
        &mut self,
        stage: &str,
        answers: Answers,
    ) -> wfe_contract::Result<()> {
        for (key, answer) in answers {
            let held = key.parse::<usize>().ok().and_then(|i| self.held.get_mut(i));
            let Some(held) = held else {
                return Err(wfe_contract::Error::state(
                    stage,
                    format!("an answer for held window `{key}` of {}", self.held.len()),
                ));
            };
            held.answer = Some(answer);
        }
        Ok(())
    }
}

/// The metric set's id: a hash of its metric names.
pub(crate) fn signature(names: &[String]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(names.join("\u{1f}").as_bytes())
}
