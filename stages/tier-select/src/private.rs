//! Private capacity: what a workload has on premises counts before any instance, and a
//! hybrid burst (private plus public) prices the traffic between the two.

use crate::{Need, Priced, PrivateCapacity, TierSelect};

impl TierSelect {
    /// A workload's private capacity per unit (zero without any).
    pub(crate) fn private_of(&self, workload: &str) -> impl Fn(&str) -> f64 + use<> {
        let p = self
            .cfg
            .private
            .iter()
            .find(|p| p.applies_to(workload))
            .cloned();
        move |unit: &str| p.as_ref().map_or(0.0, |p| p.of(unit))
    }

    /// The transfer cost of bursting (per hour) and a sentence on the private share: traffic
    /// to and from public instances is the median network demand times the public share of
    /// the capacity of the resource that set the count.
    pub(crate) fn burst_transfer(
        &self,
        p: &PrivateCapacity,
        needs: &[Need],
        chosen: &Priced,
    ) -> (f64, String) {
        let d = &chosen.driver;
        let unit = needs
            .iter()
            .find(|n| n.resource == d.resource)
            .map_or("vcpu", |n| n.unit.as_str());
        let private = p.of(unit);
        let public = chosen.count as f64 * d.per_instance;
        if chosen.count == 0 {
            return (
                0.0,
                format!(
                    "private capacity carries the demand at the SLA quantile (private {private} {unit})"
                ),
            );
        }
        let share = public / (public + private).max(1e-12);
        // The network need's median stands for the traffic.
        let gbps = needs
            .iter()
            .filter(|n| n.unit == "gbps")
            .filter_map(|n| n.at(0.5).map(|(_, v)| v))
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
        match gbps {
            Some(g) => {
                let cost = g * share * 450.0 * self.cfg.transfer_cost_per_gb;
                (
                    cost,
                    format!(
                        "hybrid burst: {private} {unit} private, {public:.2} public ({:.0} % of capacity); transfer {g:.2} Gbit/s x {:.0} % x 450 GB/h x {}/GB = {cost:.3}/h",
                        share * 100.0,
                        share * 100.0,
                        self.cfg.transfer_cost_per_gb
                    ),
                )
            }
            None => (
                0.0,
                format!(
                    "hybrid burst: {private} {unit} private, {public:.2} public ({:.0} % of capacity); no network forecast, so no transfer cost counted",
                    share * 100.0
                ),
            ),
        }
    }
}
