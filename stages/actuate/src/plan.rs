//! The plan for one decision: the counts wanted after the caps, and the calls from what is
//! in place to them (launches first, then terminations). Pure: nothing here calls EC2.

use std::collections::HashMap;

use serde_json::json;
use wfe_ec2::Launch;

use crate::config::ActuateConfig;
use crate::fleet::Fleet;
use crate::guards;

/// One decision row, checked.
#[derive(Debug, Clone)]
pub(crate) struct Decision<'a> {
    pub(crate) id: &'a str,
    pub(crate) time: i64,
    pub(crate) workload: &'a str,
    pub(crate) tier: &'a str,
    pub(crate) instance_type: &'a str,
    pub(crate) count: i64,
    pub(crate) spot: i64,
    /// Expected cost per instance and hour (for the spend cap).
    pub(crate) unit_cost: f64,
}

/// A call planned for a decision.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    Launch {
        spot: bool,
        count: i64,
    },
    Terminate {
        spot: bool,
        ids: Vec<String>,
        count: i64,
        /// Instances of another type than the record's (found by describe).
        stray: bool,
    },
}

/// Spend per hour of every workload's fleet but `workload`'s.
fn spend_of_others(fleets: &HashMap<String, Fleet>, workload: &str) -> f64 {
    fleets
        .iter()
        .filter(|(w, _)| w.as_str() != workload)
        .map(|(_, f)| f.cost_per_hour())
        .sum()
}

/// The counts wanted after `cfg`'s caps (with every workload's `fleets` in view), with a note
/// for each cap that bit.
pub(crate) fn capped(
    cfg: &ActuateConfig,
    fleets: &HashMap<String, Fleet>,
    d: &Decision<'_>,
    have: &Fleet,
) -> (i64, i64, Vec<String>) {
    let mut notes = Vec::new();
    let (mut od, mut spot) = (d.count - d.spot, d.spot);
    if od + spot > cfg.max_instances {
        notes.push(format!(
            "capped from {} to max_instances {}",
            od + spot,
            cfg.max_instances
        ));
        spot = spot.min(cfg.max_instances);
        od = cfg.max_instances - spot;
    }
    let elsewhere: i64 = fleets
        .iter()
        .filter(|(w, _)| w.as_str() != d.workload)
        .map(|(_, f)| f.size())
        .sum();
    let cap = cfg.max_fleet_instances;
    let wanted = od + spot;
    let (o, s, note) = guards::fit(od, spot, cap - elsewhere, || {
        format!("capped from {wanted} by max_fleet_instances {cap} ({elsewhere} elsewhere)")
    });
    (od, spot) = (o, s);
    notes.extend(note);
    let same = have.instance_type == d.instance_type;
    let (od0, spot0) = if same {
        (have.on_demand.count(), have.spot.count())
    } else {
        (0, 0)
    };
    let added = (od - od0).max(0) + (spot - spot0).max(0);
    if added > cfg.max_step {
        notes.push(format!(
            "step capped from {added} to max_step {}",
            cfg.max_step
        ));
        let (od_add, spot_add) = split(added.min(cfg.max_step), od - od0, spot - spot0);
        od = od.min(od0 + od_add);
        spot = spot.min(spot0 + spot_add);
    }
    if let Some(cap) = cfg.max_spend_per_hour {
        let room = cap - spend_of_others(fleets, d.workload);
        let afford = if d.unit_cost > 0.0 {
            (room / d.unit_cost + 1e-9).floor().max(0.0) as i64
        } else {
            i64::MAX
        };
        if od + spot > afford {
            notes.push(format!(
                    "spend capped: {} instances at {:.4}/h would pass max_spend_per_hour {cap} ({:.4}/h left): {afford} kept",
                    od + spot,
                    d.unit_cost,
                    room.max(0.0)
                ));
            spot = spot.min(afford);
            od = (afford - spot).max(0);
        }
    }
    (od, spot, notes)
}

/// The calls from `have` to (type, od, spot): launches first, then terminations (make
/// before break: capacity never dips below both fleets' while a change is under way).
pub(crate) fn calls(d: &Decision<'_>, have: &Fleet, od: i64, spot: i64) -> Vec<Call> {
    let mut calls = Vec::new();
    let same = have.instance_type == d.instance_type;
    for (is_spot, group, want) in [(false, &have.on_demand, od), (true, &have.spot, spot)] {
        let base = if same { group.count() } else { 0 };
        if want > base {
            calls.push(Call::Launch {
                spot: is_spot,
                count: want - base,
            });
        }
    }
    if !have.stray.is_empty() {
        // Instances of the workload that are not of its recorded type (found by describe).
        calls.push(Call::Terminate {
            spot: false,
            ids: have.stray.clone(),
            count: have.stray.len() as i64,
            stray: true,
        });
    }
    for (is_spot, group, want) in [(false, &have.on_demand, od), (true, &have.spot, spot)] {
        let keep = if same { want } else { 0 };
        if group.count() > keep {
            calls.push(Call::Terminate {
                spot: is_spot,
                ids: group.newest(group.count() - keep),
                count: group.count() - keep,
                stray: false,
            });
        }
    }
    calls
}

/// The RunInstances request of `count` instances for `d`, tagged with what it is for.
pub(crate) fn launch_request(
    cfg: &ActuateConfig,
    d: &Decision<'_>,
    spot: bool,
    count: i64,
    token: &str,
) -> Launch {
    Launch {
        instance_type: d.instance_type.to_string(),
        count,
        spot,
        client_token: token.to_string(),
        image_id: cfg.image_id.clone().unwrap_or_default(),
        subnet_id: cfg.subnet_id.clone(),
        security_group_ids: cfg.security_group_ids.clone(),
        tags: vec![
            ("wfe:workload".into(), d.workload.to_string()),
            ("wfe:decision".into(), d.id.to_string()),
            (
                "wfe:tier".into(),
                if spot { "spot" } else { d.tier }.to_string(),
            ),
        ],
    }
}

/// Splits `n` additions over on-demand and spot in proportion to what each wanted.
fn split(n: i64, want_od: i64, want_spot: i64) -> (i64, i64) {
    let (a, b) = (want_od.max(0), want_spot.max(0));
    if a + b == 0 {
        return (0, 0);
    }
    let spot = ((n as f64) * b as f64 / (a + b) as f64).round() as i64;
    (n - spot.min(n), spot.min(n))
}

/// The JSON of a launch as `actions` records it (what RunInstances is sent).
pub(crate) fn launch_params(region: &str, req: &Launch, dry_run: bool) -> serde_json::Value {
    let mut p = json!({
        "Region": region,
        "ImageId": req.image_id,
        "InstanceType": req.instance_type,
        "MinCount": req.count,
        "MaxCount": req.count,
        "ClientToken": req.client_token,
        "DryRun": dry_run,
        "TagSpecifications": [{"ResourceType": "instance", "Tags":
            req.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>()}],
    });
    if req.spot {
        p["InstanceMarketOptions"] = json!({"MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}});
    }
    p
}
