//! The record of what the actuator put in place for a workload: one instance type, its
//! on-demand and spot groups, and (in `apply` mode) their instance ids.

use serde::{Deserialize, Serialize};

use wfe_ec2::Running;

/// Instances of one market. `ids` (newest last) are known in `apply` mode; the other modes
/// launch nothing and keep the count only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Group {
    count: i64,
    ids: Vec<(String, i64)>,
}

impl Group {
    pub fn count(&self) -> i64 {
        self.count
    }

    /// Ids of the `n` newest instances (fewer when fewer ids are known).
    pub fn newest(&self, n: i64) -> Vec<String> {
        let mut ids = self.ids.clone();
        ids.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        ids.into_iter()
            .take(n.max(0) as usize)
            .map(|(id, _)| id)
            .collect()
    }

    /// The known instance ids.
    pub fn ids(&self) -> Vec<String> {
        self.ids.iter().map(|(id, _)| id.clone()).collect()
    }

    pub fn add_count(&mut self, n: i64) {
        self.count += n;
    }

    pub fn add_ids(&mut self, ids: &[String], at: i64) {
        self.count += ids.len() as i64;
        self.ids.extend(ids.iter().map(|id| (id.clone(), at)));
    }

    /// `n` instances gone, `ids` among them.
    pub fn remove(&mut self, n: i64, ids: &[String]) {
        self.count = (self.count - n).max(0);
        self.ids.retain(|(id, _)| !ids.contains(id));
    }
}

/// A workload's instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Fleet {
    pub instance_type: String,
    /// Tier of the on-demand group (`on-demand`, `high-performance`).
    pub tier: String,
    pub on_demand: Group,
    pub spot: Group,
    /// Instances of the workload of another type than `instance_type`, found by describe:
    /// terminated at the next decision.
    #[serde(default)]
    pub stray: Vec<String>,
    /// Expected cost per instance and hour, from the last decision (for the spend cap).
    #[serde(default)]
    pub unit_cost: f64,
}

impl Fleet {
    pub fn size(&self) -> i64 {
        self.on_demand.count() + self.spot.count() + self.stray.len() as i64
    }

    pub fn cost_per_hour(&self) -> f64 {
        self.unit_cost * self.size() as f64
    }

    /// The fleet EC2 reports: the recorded type if any of it runs, else the most common one;
    /// instances of other types are strays.
    pub fn from_running(running: &[Running], recorded: &Fleet) -> Fleet {
        let mut types: Vec<(&str, usize)> = Vec::new();
        for r in running {
            match types.iter_mut().find(|(t, _)| *t == r.instance_type) {
                Some(t) => t.1 += 1,
                None => types.push((&r.instance_type, 1)),
            }
        }
        let main = if types.iter().any(|(t, _)| *t == recorded.instance_type) {
            recorded.instance_type.clone()
        } else {
            types
                .iter()
                .max_by_key(|(_, n)| *n)
                .map(|(t, _)| t.to_string())
                .unwrap_or_default()
        };
        let mut fleet = Fleet {
            instance_type: main.clone(),
            tier: recorded.tier.clone(),
            unit_cost: recorded.unit_cost,
            ..Default::default()
        };
        for r in running {
            if r.instance_type != main {
                fleet.stray.push(r.id.clone());
            } else if r.spot {
                fleet
                    .spot
                    .add_ids(std::slice::from_ref(&r.id), r.launched_ms);
            } else {
                fleet
                    .on_demand
                    .add_ids(std::slice::from_ref(&r.id), r.launched_ms);
            }
        }
        if main.is_empty() {
            return Fleet {
                unit_cost: recorded.unit_cost,
                ..Default::default()
            };
        }
        fleet
    }

    /// Applies one recorded call (an `actions` row that was done) to the record; `None` when
    /// its parameters do not say enough.
    pub fn replay(
        &mut self,
        call: &str,
        p: &serde_json::Value,
        ids: Option<&[String]>,
        at: i64,
    ) -> Option<()> {
        if call == "ec2:RunInstances" {
            let itype = p["InstanceType"].as_str()?;
            let n = p["MinCount"].as_i64()?;
            let spot = p.get("InstanceMarketOptions").is_some();
            let tags = p["TagSpecifications"][0]["Tags"].as_array()?;
            let tier = tags.iter().find(|t| t["Key"] == "wfe:tier")?["Value"].as_str()?;
            if self.instance_type != itype {
                *self = Fleet {
                    instance_type: itype.into(),
                    tier: if spot { self.tier.clone() } else { tier.into() },
                    unit_cost: self.unit_cost,
                    ..Default::default()
                };
            }
            let group = if spot {
                &mut self.spot
            } else {
                &mut self.on_demand
            };
            match ids {
                Some(ids) => group.add_ids(ids, at),
                None => group.add_count(n),
            }
        } else {
            let sel = &p["Select"];
            let listed: Vec<String> = p["InstanceIds"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if sel["Stray"].as_bool() == Some(true) {
                self.stray.retain(|id| !listed.contains(id));
                return Some(());
            }
            let n = sel["Count"].as_i64()?;
            // Rows of the first version name the market as `Tier`.
            let spot = match sel.get("Market") {
                Some(m) => m.as_str()? == "spot",
                None => sel["Tier"].as_str()? == "spot",
            };
            if sel["InstanceType"].as_str()? == self.instance_type {
                let group = if spot {
                    &mut self.spot
                } else {
                    &mut self.on_demand
                };
                group.remove(n, &listed);
            }
        }
        Some(())
    }
}
