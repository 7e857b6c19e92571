//! Spot interruption notices: EC2's two-minute warnings read from the queue between
//! decisions (and on ticks), each replaced at once (spot again unless spot of its type is
//! scarce), deleted from the queue only once dealt with.

use serde_json::json;
use wfe_contract::{Context, Error, Event};
use wfe_ec2::Received;

use crate::plan::{Call, Decision};
use crate::rows::{Rows, action_id, interruption_id};
use crate::{Actuate, InterruptionSource, NOTICES};

/// Errors after which a spot launch is retried on demand at once.
fn spot_capacity_error(e: &Error) -> bool {
    let m = e.to_string();
    [
        "InsufficientInstanceCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "InsufficientCapacity",
    ]
    .iter()
    .any(|c| m.contains(c))
}

impl Actuate {
    /// Reads the notice queue if `poll_s` has passed since the last read.
    pub(crate) fn poll(&mut self, rows: &mut Rows, ctx: &mut Context) {
        let (Some(src), Some(notices)) = (self.cfg.interruptions.clone(), self.notices.as_mut())
        else {
            return;
        };
        let due = self
            .last_poll
            .is_none_or(|t| t.elapsed().as_secs_f64() >= src.poll_s);
        if !due {
            return;
        }
        self.last_poll = Some(std::time::Instant::now());
        match notices.receive() {
            Ok(received) => {
                for m in received {
                    self.on_notice(&src, m, rows, ctx);
                }
            }
            Err(e) => {
                let msg = format!("{e}; reading again in {} s", src.poll_s);
                ctx.reject("notice_receive_failed", "interruptions.queue_url", &msg);
            }
        }
    }

    /// Deletes a message dealt with; a failure is reported (the message comes back, and
    /// the notice's id, already applied, makes it a no-op).
    fn ack(&mut self, m: &Received, ctx: &mut Context) {
        let Some(notices) = self.notices.as_mut() else {
            return;
        };
        if let Err(e) = notices.ack(&m.receipt) {
            let loc = format!("message {}", m.message_id);
            let msg = e.to_string();
            ctx.reject("notice_ack_failed", &loc, &msg);
        }
    }

    /// Reports a message this actuator will not act on, and deletes it.
    fn give_up(&mut self, m: &Received, kind: &'static str, msg: &str, ctx: &mut Context) {
        let loc = format!("message {}", m.message_id);
        ctx.event(Event::Rejected {
            kind,
            location: &loc,
            message: msg,
            count: 1,
        });
        self.ack(m, ctx);
    }

    /// One message of the notice queue.
    fn on_notice(
        &mut self,
        src: &InterruptionSource,
        m: Received,
        rows: &mut Rows,
        ctx: &mut Context,
    ) {
        let n = match &m.notice {
            Ok(n) => n.clone(),
            Err(why) => {
                self.give_up(&m, "bad_notice", why, ctx);
                return;
            }
        };
        if n.kind == wfe_ec2::NoticeKind::Rebalance && !src.on_rebalance {
            ctx.count("notices.rebalance_ignored", 1);
            self.ack(&m, ctx);
            return;
        }
        let id = interruption_id(&n.instance_id);
        if self.state.applied.contains(NOTICES, &id)
            || self
                .state
                .applied
                .is_stale(NOTICES, n.time_ms, self.window_ms())
        {
            ctx.event(Event::Dropped {
                kind: "replayed_notice",
                count: 1,
            });
            self.ack(&m, ctx);
            return;
        }
        let owner = self
            .state
            .fleets
            .iter()
            .find(|(_, f)| f.spot.ids().contains(&n.instance_id))
            .map(|(w, _)| w.clone());
        let Some(workload) = owner else {
            if m.receive_count >= src.max_receives {
                let msg = format!(
                    "{} is no spot instance of this actuator's: deleted after {} deliveries",
                    n.instance_id, m.receive_count
                );
                self.give_up(&m, "notice_unknown_instance", &msg, ctx);
            } else {
                // Another partition's actuator may own it: left on the queue for it.
                ctx.count("notices.not_mine", 1);
            }
            return;
        };
        let mut fleet = self.state.fleets[&workload].clone();
        // Each warned instance counts once (a notice that comes back after a failed
        // replacement is the same warning).
        if n.kind == wfe_ec2::NoticeKind::Interruption
            && !self
                .state
                .warnings
                .iter()
                .any(|(_, _, i)| *i == n.instance_id)
        {
            self.state.warnings.push((
                fleet.instance_type.clone(),
                n.time_ms,
                n.instance_id.clone(),
            ));
        }
        let window = src.scarce_window_s * 1000;
        self.state
            .warnings
            .retain(|(_, t, _)| (n.time_ms - t).abs() < window);
        let seen = self
            .state
            .warnings
            .iter()
            .filter(|(t, _, _)| *t == fleet.instance_type)
            .count();
        let scarce = seen >= src.scarce_after;
        let (itype, tier) = (fleet.instance_type.clone(), fleet.tier.clone());
        let d = Decision {
            id: &id,
            time: n.time_ms,
            workload: &workload,
            tier: &tier,
            instance_type: &itype,
            count: 1,
            spot: i64::from(!scarce),
            unit_cost: fleet.unit_cost,
        };
        let mut reason = format!(
            "{} notice for spot {} ({itype}, {workload}): replaced {}",
            n.kind.name(),
            n.instance_id,
            if scarce {
                format!(
                    "on demand: spot of {itype} is scarce ({seen} warnings within {} s)",
                    src.scarce_window_s
                )
            } else {
                "by spot".to_string()
            }
        );
        let markets: &[bool] = if scarce { &[false] } else { &[true, false] };
        for (k, &spot) in markets.iter().enumerate() {
            let call_id = action_id(&id, k);
            let (name, mut params, result) =
                self.execute(&d, &Call::Launch { spot, count: 1 }, &call_id, &mut fleet);
            params["wfe:replaces"] = json!(n.instance_id);
            params["wfe:reason"] = json!(reason);
            params["wfe:unit_cost"] = json!(fleet.unit_cost);
            let loc = format!("notice {} {name}", n.instance_id);
            rows.call(
                ctx, call_id, &id, n.time_ms, &workload, name, &params, &result, &loc,
            );
            match result {
                Ok(_) => {
                    fleet.spot.remove(1, std::slice::from_ref(&n.instance_id));
                    self.state.fleets.insert(workload.clone(), fleet);
                    self.state
                        .interrupted
                        .insert(n.instance_id.clone(), workload.clone());
                    let window = self.window_ms();
                    self.state.applied.insert(NOTICES, id, n.time_ms, window);
                    ctx.count("notices.replaced", 1);
                    self.ack(&m, ctx);
                    return;
                }
                Err(e) if spot && spot_capacity_error(&e) => {
                    reason = format!("{reason}; spot launch failed for capacity ({e}): on demand");
                }
                Err(_) => break,
            }
        }
        // Not replaced: the message comes back after its visibility timeout, until
        // max_receives; the next decision's describe makes up the capacity in any case.
        if m.receive_count >= src.max_receives {
            let msg = format!(
                "replacing {} failed {} times: deleted; the next decision makes up the capacity",
                n.instance_id, m.receive_count
            );
            self.give_up(&m, "notice_given_up", &msg, ctx);
        }
    }
}
