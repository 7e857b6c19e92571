//! The `actions` rows a batch of decisions (or a notice) makes: one per call, with its
//! outcome or error, and the row of a refused decision.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use serde_json::json;
use wfe_contract::columns::{list_str, timestamp_column};
use wfe_contract::{Context, Event, Result, Topic};

use crate::{Mode, REFUSE_CALL, guards};

/// The `actions` rows of a batch.
#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) id: Vec<String>,
    pub(crate) decision: Vec<String>,
    pub(crate) time: Vec<i64>,
    pub(crate) workload: Vec<String>,
    pub(crate) call: Vec<&'static str>,
    pub(crate) params: Vec<String>,
    pub(crate) outcome: Vec<&'static str>,
    pub(crate) error: Vec<Option<String>>,
    pub(crate) ids: Vec<Option<Vec<String>>>,
}

impl Rows {
    /// One call's row: its outcome and instance ids, or its error (also reported, marked
    /// retryable or not), counted by outcome.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call(
        &mut self,
        ctx: &mut Context,
        id: String,
        decision: &str,
        time: i64,
        workload: &str,
        name: &'static str,
        params: &serde_json::Value,
        result: &Result<(&'static str, Option<Vec<String>>)>,
        location: &str,
    ) {
        let (outcome, error, ids) = match result {
            Ok((o, ids)) => (*o, None, ids.clone()),
            Err(e) => {
                let msg = e.to_string();
                ctx.event(Event::Rejected {
                    kind: if e.is_retryable() {
                        "ec2_error_retryable"
                    } else {
                        "ec2_error"
                    },
                    location,
                    message: &msg,
                    count: 1,
                });
                ("error", Some(msg), None)
            }
        };
        ctx.count(&format!("actions.{outcome}"), 1);
        self.id.push(id);
        self.decision.push(decision.to_string());
        self.time.push(time);
        self.workload.push(workload.to_string());
        self.call.push(name);
        self.params.push(params.to_string());
        self.outcome.push(outcome);
        self.error.push(error);
        self.ids.push(ids);
    }

    /// The row of a decision refused before any call: outcome `error`, and why.
    pub(crate) fn refused(
        &mut self,
        decision: &str,
        time: i64,
        workload: &str,
        a: &guards::Asked<'_>,
        why: &str,
    ) {
        let params = json!({
            "InstanceType": a.instance_type,
            "Count": a.count,
            "SpotCount": a.spot,
            "wfe:expected_cost_per_hour": a.cost_per_hour,
            "wfe:refused": why,
        });
        self.id.push(action_id(decision, 0));
        self.decision.push(decision.to_string());
        self.time.push(time);
        self.workload.push(workload.to_string());
        self.call.push(REFUSE_CALL);
        self.params.push(params.to_string());
        self.outcome.push("error");
        self.error.push(Some(format!("decision refused: {why}")));
        self.ids.push(None);
    }

    /// The rows as an `actions` batch, every row in `mode`.
    pub(crate) fn finish(self, mode: Mode) -> Result<RecordBatch> {
        let n = self.id.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.id)),
            Arc::new(StringArray::from(self.decision)),
            timestamp_column(self.time),
            Arc::new(StringArray::from(self.workload)),
            Arc::new(StringArray::from(self.call)),
            Arc::new(StringArray::from(self.params)),
            Arc::new(StringArray::from(vec![mode.name(); n])),
            Arc::new(StringArray::from(self.outcome)),
            Arc::new(StringArray::from(self.error)),
            list_str(self.ids.into_iter()),
        ];
        Ok(RecordBatch::try_new(Topic::Actions.schema(), columns)?)
    }
}

/// Deterministic action id (also the ClientToken): decision id and the call's place in it.
pub fn action_id(decision_id: &str, n: usize) -> String {
    wfe_contract::id::stable_id(&["action", decision_id, &n.to_string()])
}

/// Deterministic id of the replacement of an interrupted instance (its `decision_id`).
pub fn interruption_id(instance_id: &str) -> String {
    wfe_contract::id::stable_id(&["interruption", instance_id])
}
