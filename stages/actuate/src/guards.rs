//! The checks a decision passes before any call is planned: pure functions of the decision,
//! the catalog and the settings, so they are tested without EC2.
//!
//! The actuator is the last line before real spend, so it trusts nothing a decision says
//! about money: the spend cap prices each instance at the catalog's price at least (a decision
//! whose cost is zero, negative or stale cannot lift it), and a count far beyond any cap is
//! refused as a bug upstream rather than quietly capped.

use wfe_ec2::Catalog;

/// A count beyond this many times `max_instances` is refused outright (an error row), not
/// capped: no sane decision asks for it, and acting on part of it would hide the bug.
pub const ABSURD_FACTOR: i64 = 10;

/// What one decision row asks for.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub instance_type: &'a str,
    pub count: i64,
    pub spot: i64,
    /// The decision's own expected cost per hour of all `count` instances.
    pub cost_per_hour: f64,
}

/// The cost per instance and hour the caps use: the decision's own, never below what the
/// catalog lists for the same mix. `Err` says why the decision is refused.
pub fn unit_cost(a: &Asked<'_>, catalog: &Catalog, max_instances: i64) -> Result<f64, String> {
    if a.count < 0 || !(0..=a.count).contains(&a.spot) {
        return Err(format!(
            "count {} with spot_count {}: counts must satisfy 0 <= spot_count <= count",
            a.count, a.spot
        ));
    }
    if a.instance_type.is_empty() {
        return Err("no instance type".into());
    }
    if !a.cost_per_hour.is_finite() {
        return Err(format!(
            "expected_cost_per_hour {} is not a number",
            a.cost_per_hour
        ));
    }
    let absurd = ABSURD_FACTOR * max_instances.max(1);
    if a.count > absurd {
        return Err(format!(
            "count {} is over {absurd} ({ABSURD_FACTOR} x max_instances): a fault upstream, not capacity to cap",
            a.count
        ));
    }
    let Some(listed) = catalog.price_per_hour(a.instance_type, a.count, a.spot) else {
        return Err(format!(
            "instance type `{}` is not in the catalog ({} snapshot {}): its price is unknown",
            a.instance_type, catalog.region, catalog.snapshot
        ));
    };
    Ok(if a.count > 0 {
        a.cost_per_hour.max(listed) / a.count as f64
    } else {
        0.0
    })
}

/// The (on-demand, spot) counts that fit in `room` instances, spot kept first (it is the
/// cheaper part of a mix), with a note when the cap bit.
pub fn fit(
    od: i64,
    spot: i64,
    room: i64,
    what: impl FnOnce() -> String,
) -> (i64, i64, Option<String>) {
    if od + spot <= room {
        return (od, spot, None);
    }
    let room = room.max(0);
    let spot_kept = spot.min(room);
    (room - spot_kept, spot_kept, Some(what()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(t: &str, count: i64, spot: i64, cost: f64) -> Asked<'_> {
        Asked {
            instance_type: t,
            count,
            spot,
            cost_per_hour: cost,
        }
    }

    #[test]
    fn the_catalog_price_is_the_floor_of_a_decisions_cost() {
        let cat = Catalog::shipped().unwrap();
        let m5 = cat
            .get("m7i.xlarge")
            .expect("m7i.xlarge in the shipped catalog");
        let (od, sp) = (
            m5.on_demand_price,
            m5.spot_price.unwrap_or(m5.on_demand_price),
        );
        // A decision that says its 4 instances (1 spot) cost nothing, or less than nothing,
        // is priced at the catalog's 3 x on demand + 1 x spot.
        let listed = (3.0 * od + sp) / 4.0;
        for cost in [0.0, -50.0, 0.01] {
            let u = unit_cost(&asked("m7i.xlarge", 4, 1, cost), &cat, 100).unwrap();
            assert!((u - listed).abs() < 1e-12, "{cost}: {u} vs {listed}");
        }
        // A dearer decision (live spot prices above the snapshot) keeps its own cost.
        let u = unit_cost(&asked("m7i.xlarge", 4, 1, 400.0), &cat, 100).unwrap();
        assert_eq!(u, 100.0);
        assert_eq!(
            unit_cost(&asked("m7i.xlarge", 0, 0, 0.0), &cat, 100),
            Ok(0.0)
        );
    }

    #[test]
    fn absurd_or_malformed_decisions_are_refused_saying_why() {
        let cat = Catalog::shipped().unwrap();
        let refused = |a: Asked<'_>| unit_cost(&a, &cat, 100).unwrap_err();
        assert!(refused(asked("m7i.xlarge", 1001, 0, 1.0)).contains("over 1000"));
        assert!(refused(asked("m7i.xlarge", i64::MAX, 0, 1.0)).contains("over 1000"));
        assert!(refused(asked("m7i.xlarge", -1, 0, 1.0)).contains("0 <= spot_count <= count"));
        assert!(refused(asked("m7i.xlarge", 2, 3, 1.0)).contains("0 <= spot_count <= count"));
        assert!(refused(asked("", 2, 0, 1.0)).contains("no instance type"));
        assert!(refused(asked("m7i.xlarge", 2, 0, f64::NAN)).contains("not a number"));
        assert!(
            refused(asked("x9.nothing", 2, 0, 1.0)).contains("`x9.nothing` is not in the catalog")
        );
        // Up to the bound is capped later, not refused.
        assert!(unit_cost(&asked("m7i.xlarge", 1000, 0, 1.0), &cat, 100).is_ok());
    }

    #[test]
    fn fitting_keeps_spot_first_and_notes_the_cap() {
        assert_eq!(fit(3, 2, 10, || "x".into()), (3, 2, None));
        assert_eq!(fit(3, 2, 4, || "x".into()), (2, 2, Some("x".into())));
        assert_eq!(fit(3, 2, 1, || "x".into()), (0, 1, Some("x".into())));
        assert_eq!(fit(3, 2, -5, || "x".into()), (0, 0, Some("x".into())));
    }
}
