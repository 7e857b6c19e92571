//! Frontiers of cost against under-provisioning: which of a policy's settings no other
//! setting beats on both, and the cost a policy reaches at a given under-provisioning,
//! interpolated along its frontier. Pure: the sweep feeds it totals.

use serde::Serialize;

/// One setting of a policy and its totals over a data set's entities.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// The knob and its value, e.g. `target_utilisation=0.7`.
    pub setting: String,
    /// USD over the test splits.
    pub cost: f64,
    pub underprovisioned_minutes: f64,
    /// Hours that violated the SLA.
    pub sla_violations: u64,
}

/// Indices of the points on the frontier, by under-provisioning ascending (then cost): each
/// costs less than every point with no more under-provisioning before it.
pub fn frontier(points: &[Point]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].cost.is_finite() && points[i].underprovisioned_minutes.is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        let (p, q) = (&points[a], &points[b]);
        p.underprovisioned_minutes
            .total_cmp(&q.underprovisioned_minutes)
            .then(p.cost.total_cmp(&q.cost))
    });
    let mut out: Vec<usize> = Vec::new();
    for i in order {
        if out.last().is_none_or(|&j| points[i].cost < points[j].cost) {
            out.push(i);
        }
    }
    out
}

/// The cost along the frontier at `minutes` of under-provisioning: linear between the two
/// frontier points around it (running the two settings for shares of the period would land
/// there), the cheapest point's cost beyond the frontier's end; None where every setting
/// under-provisions more than `minutes`.
pub fn cost_at(points: &[Point], minutes: f64) -> Option<f64> {
    let f = frontier(points);
    let at = |i: usize| (points[f[i]].underprovisioned_minutes, points[f[i]].cost);
    if f.is_empty() || minutes < at(0).0 {
        return None;
    }
    for k in 1..f.len() {
        let ((u0, c0), (u1, c1)) = (at(k - 1), at(k));
        if minutes <= u1 {
            let share = if u1 > u0 {
                (minutes - u0) / (u1 - u0)
            } else {
                1.0
            };
            return Some(c0 + share * (c1 - c0));
        }
    }
    Some(at(f.len() - 1).1)
}

/// The cheapest cost among the points that violated the SLA in no hour.
pub fn cost_without_violations(points: &[Point]) -> Option<f64> {
    points
        .iter()
        .filter(|p| p.sla_violations == 0 && p.cost.is_finite())
        .map(|p| p.cost)
        .min_by(f64::total_cmp)
}

/// Whether some point of `by` is at no higher cost and no more under-provisioning than `p`.
pub fn dominated(p: &Point, by: &[Point]) -> bool {
    by.iter()
        .any(|q| q.cost <= p.cost && q.underprovisioned_minutes <= p.underprovisioned_minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(cost: f64, minutes: f64, violations: u64) -> Point {
        Point {
            setting: format!("{cost}"),
            cost,
            underprovisioned_minutes: minutes,
            sla_violations: violations,
        }
    }

    #[test]
    fn the_frontier_drops_dominated_points_and_interpolates_between_the_rest() {
        let points = [
            p(100.0, 0.0, 0),
            p(60.0, 40.0, 2),
            p(80.0, 10.0, 0),
            p(90.0, 20.0, 1), // beaten by (80, 10): costs more and is short longer
            p(60.0, 50.0, 3), // as cheap as (60, 40) but short longer
            p(f64::NAN, 5.0, 0),
        ];
        assert_eq!(frontier(&points), [0, 2, 1]);
        // Between (10 min, 80) and (40 min, 60): a third of the way.
        let c = cost_at(&points, 20.0).unwrap();
        assert!((c - (80.0 - 20.0 / 3.0)).abs() < 1e-9, "{c}");
        assert_eq!(cost_at(&points, 0.0), Some(100.0));
        assert_eq!(cost_at(&points, 10.0), Some(80.0));
        assert_eq!(
            cost_at(&points, 500.0),
            Some(60.0),
            "the cheapest beyond the end"
        );
        assert_eq!(cost_without_violations(&points), Some(80.0));
        let short = [p(50.0, 30.0, 1)];
        assert_eq!(
            cost_at(&short, 29.0),
            None,
            "no setting is short that little"
        );
        assert_eq!(cost_without_violations(&short), None);
        assert_eq!(cost_at(&[], 1.0), None);
    }

    #[test]
    fn a_point_is_dominated_by_one_no_dearer_and_no_shorter() {
        let by = [p(100.0, 10.0, 0), p(50.0, 30.0, 0)];
        assert!(dominated(&p(100.0, 10.0, 0), &by), "equal counts");
        assert!(dominated(&p(60.0, 40.0, 0), &by));
        assert!(!dominated(&p(99.0, 10.0, 0), &by), "cheaper than both");
        assert!(!dominated(&p(200.0, 5.0, 0), &by), "shorter than both");
        assert!(
            !dominated(&p(f64::NAN, 50.0, 0), &by),
            "no figure, no claim"
        );
        assert!(!dominated(&p(1.0, 1.0, 0), &[]));
    }
}
