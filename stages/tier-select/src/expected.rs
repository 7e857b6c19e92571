//! Capacity by expected cost (`objective = "expected-cost"`).
//!
//! The `risk` objective covers one quantile and caps the chance of falling short; it never
//! asks what falling short costs. Here every option (an instance type, a count `n`, `s` of
//! them spot) is priced over the decision's horizon `H` (its longest forecast horizon) as
//!
//! `instances + shortfall_price x E[unit-minutes short] + churn_cost x (launched + ended)`
//!
//! and the least expected cost wins. Demand is the forecast read as a distribution, exactly as
//! the risk objective reads it ([`crate::plan::exceed`]); `E[(D - C)+]` is the integral of that
//! exceedance from `C` up ([`expected_excess`]). Each need covers the stretch of the horizon
//! between the previous horizon of its resource and its own (15 min: the first quarter hour,
//! 1 h: the rest of the hour). Two things the fleet in place decides:
//! - **lead time**: an option that launches anything serves with the fleet in place for the
//!   first `lead_s` (the actuator makes before it breaks); one that only ends instances
//!   serves with its own size at once;
//! - **churn**: instances launched plus instances ended, against the fleet in place (a change
//!   of type replaces all of them).
//!
//! Spot: each spot instance is interrupted within `H` with the catalog's rate; an interruption
//! falls anywhere in the horizon, so on average an interrupted instance is missing for half of
//! it: the shortfall after the lead is the mean of the full fleet's and the binomial mix of the
//! fleets interruptions leave.
//!
//! The search: the expected excess is convex in capacity and the churn in the count, so the
//! cost is convex in `n` on either side of the fleet in place (launching or not changes how
//! the lead time is served). Each side, from `min_instances` to where the forecast's tail is
//! spent (exceedance under 1e-6) plus spares for spot, is searched from the count the SLA
//! quantile needs: doubling steps downhill, then a ternary search in the last bracket. Per
//! count the spot share is all that `max_spot_share` allows when one fewer costs more (each
//! spot instance saves a fixed price and adds shortfall at an increasing rate), else searched
//! the same way.

use crate::cost::{CostModel, Expected, InPlace};
use crate::plan::{Driver, Need, Priced, Rules};
use crate::{Catalog, Instance};

/// Counts whose expected excess is remembered while one type is priced.
const REMEMBERED: i64 = 4096;

/// Five-point Gauss-Hermite rule for a standard normal: (point, weight).
const GAUSS_HERMITE: [(f64, f64); 5] = [
    (-2.856_970_013_872_806, 0.011_257_411_327_720_69),
    (-1.355_626_179_974_266, 0.222_075_922_005_612_6),
    (0.0, 0.533_333_333_333_333_3),
    (1.355_626_179_974_266, 0.222_075_922_005_612_6),
    (2.856_970_013_872_806, 0.011_257_411_327_720_69),
];

/// `E[(D - capacity)+]` for demand `D` read from quantile levels and values (ascending) as
/// [`crate::plan::exceed`] reads it: the integral of the exceedance from `capacity` up.
/// Linear pieces integrate exactly (trapezoids); the exponential tail in closed form.
pub fn expected_excess(levels: &[f64], values: &[f64], capacity: f64) -> f64 {
    let n = levels.len().min(values.len());
    if n == 0 {
        return f64::INFINITY;
    }
    let (l, v) = (&levels[..n], &values[..n]);
    let c = capacity.max(0.0);
    // Knots of the exceedance: (x, P(D > x)), linear in between (walked in pairs, not
    // collected: this runs for every count of every type of every decision).
    let origin = (v[0] > 0.0).then_some((0.0, 1.0));
    let mut knots = origin
        .into_iter()
        .chain(v.iter().zip(l).map(|(x, q)| (*x, 1.0 - q)));
    let mut total = 0.0;
    let mut prev = knots.next();
    for (b, eb) in knots {
        let Some((a, ea)) = prev.replace((b, eb)) else {
            break;
        };
        if b <= a || b <= c {
            continue;
        }
        let from = c.max(a);
        let e_from = ea + (eb - ea) * (from - a) / (b - a);
        total += (b - from) * (e_from + eb) / 2.0;
    }
    let top = 1.0 - l[n - 1];
    if n >= 2 && v[n - 1] > v[n - 2] && top > 0.0 {
        let slope = (l[n - 1] - l[n - 2]) / (v[n - 1] - v[n - 2]);
        let rate = slope / top;
        if rate > 0.0 {
            total += top / rate * (-(c - v[n - 1]).max(0.0) * rate).exp();
        }
    }
    total
}

/// The demand above which the exceedance falls under `p` (the tail's end for counting).
fn tail_end(levels: &[f64], values: &[f64], p: f64) -> f64 {
    let n = levels.len().min(values.len());
    let Some(&last) = values[..n].last() else {
        return 0.0;
    };
    let top = 1.0 - levels[n - 1];
    if n < 2 || values[n - 1] <= values[n - 2] || top <= p {
        return last;
    }
    let slope = (levels[n - 1] - levels[n - 2]) / (values[n - 1] - values[n - 2]);
    last + (top / p).ln() * top / slope
}

/// Minutes of a need before and after the lead time: the stretch from the previous horizon
/// of its resource to its own.
fn stretches(needs: &[Need], lead_s: i64) -> Vec<(f64, f64)> {
    needs
        .iter()
        .map(|need| {
            let from = needs
                .iter()
                .filter(|o| o.resource == need.resource && o.horizon_s < need.horizon_s)
                .map(|o| o.horizon_s)
                .max()
                .unwrap_or(0);
            let to = need.horizon_s.max(from);
            let before = (to.min(lead_s) - from).max(0);
            (before as f64 / 60.0, (to - from - before) as f64 / 60.0)
        })
        .collect()
}

/// One instance type priced against fixed needs, with each count's excess remembered.
struct Pricer<'a> {
    inst: &'a Instance,
    needs: &'a [Need],
    model: CostModel,
    /// Per need: capacity of one instance (None: the type does not measure it), minutes
    /// before and after the lead, and the expected excess over the fleet in place.
    per: Vec<Option<f64>>,
    stretch: Vec<(f64, f64)>,
    in_place: Vec<f64>,
    now: InPlace,
    /// Whether the fleet in place is of this type (then a change keeps what it can).
    same_type: bool,
    hours: f64,
    /// Chance one spot instance is interrupted within the horizon.
    q: f64,
    /// Per need, `expected_excess` at count m (NaN: not computed yet).
    excess: Vec<Vec<f64>>,
    /// `(1 - q)^s` by `s` (NaN: not computed yet): no spot instance interrupted.
    none_lost: Vec<f64>,
    /// The best spot count and its price per count `n` (the searches ask for a count more
    /// than once): a few dozen counts per type, looked through, not hashed.
    best: Vec<(i64, (i64, Expected))>,
}

impl<'a> Pricer<'a> {
    fn excess_at(&mut self, i: usize, m: i64) -> f64 {
        let Some(per) = self.per[i] else {
            return 0.0;
        };
        let need = &self.needs[i];
        let m = m.max(0);
        if m >= REMEMBERED {
            return expected_excess(&need.levels, &need.values, m as f64 * per);
        }
        let row = &mut self.excess[i];
        if row.len() <= m as usize {
            row.resize(m as usize + 1, f64::NAN);
        }
        if row[m as usize].is_nan() {
            row[m as usize] = expected_excess(&need.levels, &need.values, m as f64 * per);
        }
        row[m as usize]
    }

    /// Launched and ended instances going from the fleet in place to `n` with `s` spot.
    fn changes(&self, n: i64, s: i64) -> (i64, i64) {
        if !self.same_type {
            return (n, self.now.count);
        }
        let (now_s, now_d) = (self.now.spot_count, self.now.count - self.now.spot_count);
        let d = n - s;
        (
            (s - now_s).max(0) + (d - now_d).max(0),
            (now_s - s).max(0) + (now_d - d).max(0),
        )
    }

    fn price(&mut self, n: i64, s: i64) -> Expected {
        let inst = self.inst;
        let spot_price = inst.spot_price.unwrap_or(inst.on_demand_price);
        let (launched, ended) = self.changes(n, s);
        let mut short = 0.0;
        for i in 0..self.needs.len() {
            if self.per[i].is_none() {
                continue;
            }
            let (before, after) = self.stretch[i];
            let mut e = self.excess_at(i, n);
            if s > 0 && self.q > 0.0 {
                e = 0.5 * e + 0.5 * self.interrupted(i, n, s);
            }
            // Until launches serve, the fleet in place does (make before break).
            let early = if launched > 0 {
                self.in_place[i]
            } else {
                self.excess_at(i, n)
            };
            short += after * e + before * early;
        }
        Expected {
            horizon_s: (self.hours * 3600.0).round() as i64,
            instances: (s as f64 * spot_price + (n - s) as f64 * inst.on_demand_price) * self.hours,
            shortfall: self.model.shortfall_price * short,
            churn: self.model.churn_cost * (launched + ended) as f64,
            short_unit_minutes: short,
        }
    }

    /// Need `i`'s expected excess with `k ~ Binomial(s, q)` of the spot instances gone: term
    /// by term, or for large fleets (over 50 losses expected, where `(1 - q)^s` underflows)
    /// by the normal approximation at five Gauss-Hermite points.
    fn interrupted(&mut self, i: usize, n: i64, s: i64) -> f64 {
        let q = self.q;
        let mean = s as f64 * q;
        if mean > 50.0 {
            let sd = (mean * (1.0 - q)).sqrt();
            return GAUSS_HERMITE
                .iter()
                .map(|(z, w)| {
                    let k = (mean + z * sd).round().clamp(0.0, s as f64) as i64;
                    w * self.excess_at(i, n - k)
                })
                .sum();
        }
        let (mut pk, mut mass, mut total) = (self.none_lost_of(s), 0.0, 0.0);
        let mut last = 0.0;
        for k in 0..=s {
            last = self.excess_at(i, n - k);
            total += pk * last;
            mass += pk;
            if mass > 1.0 - 1e-9 {
                break;
            }
            pk *= (s - k) as f64 / (k + 1) as f64 * q / (1.0 - q);
        }
        total + (1.0 - mass).max(0.0) * last
    }

    /// `(1 - q)^s`, remembered for counts under [`REMEMBERED`].
    fn none_lost_of(&mut self, s: i64) -> f64 {
        let q = self.q;
        let Ok(i) = usize::try_from(s) else {
            return 1.0;
        };
        if s >= REMEMBERED {
            return (1.0 - q).powf(s as f64);
        }
        if self.none_lost.len() <= i {
            self.none_lost.resize(i + 1, f64::NAN);
        }
        if self.none_lost[i].is_nan() {
            self.none_lost[i] = (1.0 - q).powf(s as f64);
        }
        self.none_lost[i]
    }

    /// The spot count of least expected cost for `n` instances: all `cap` when one spot
    /// instance fewer costs more (the usual case: interruptions are rare), else searched.
    /// Remembered per `n` (`cap` is a function of `n` within one type's search).
    fn best_spot(&mut self, n: i64, cap: i64) -> (i64, Expected) {
        if let Some((_, known)) = self.best.iter().find(|(m, _)| *m == n) {
            return *known;
        }
        let found = self.search_spot(n, cap);
        self.best.push((n, found));
        found
    }

    fn search_spot(&mut self, n: i64, cap: i64) -> (i64, Expected) {
        let cap = cap.max(0);
        let at_cap = self.price(n, cap);
        if cap == 0 || at_cap.total() <= self.price(n, cap - 1).total() {
            return (cap, at_cap);
        }
        ternary(0, cap, |s| self.price(n, s))
    }
}

/// The argument of the least `f` over `lo..=hi` for a convex `f`, searched from `start`:
/// steps doubling in the direction that descends until the cost rises, then a ternary search
/// within the last bracket. Costs grow with the log of the distance to the optimum, not the
/// width of the range (the tail's end is far above the optimum).
fn descend(lo: i64, hi: i64, start: i64, mut f: impl FnMut(i64) -> Expected) -> (i64, Expected) {
    let start = start.clamp(lo, hi);
    let here = f(start).total();
    let dir = if start < hi && f(start + 1).total() < here {
        1
    } else if start > lo && f(start - 1).total() < here {
        -1
    } else {
        return (start, f(start));
    };
    let (mut prev, mut step) = (start, 1);
    let mut prev_cost = here;
    let far = loop {
        let next = (prev + dir * step).clamp(lo, hi);
        let cost = f(next).total();
        if cost >= prev_cost || next == lo || next == hi {
            break next;
        }
        (prev, prev_cost, step) = (next, cost, step * 2);
    };
    // The least lies between the point before `prev` and `far`.
    let back = (prev - dir * step / 2).clamp(lo, hi);
    let (a, b) = if dir > 0 { (back, far) } else { (far, back) };
    ternary(a.min(b), a.max(b), f)
}

/// The argument of the least `f` over `lo..=hi` (`lo <= hi`) for a convex `f`: thirds
/// dropped while more than three remain, then the rest compared (ties: the smaller argument).
fn ternary(mut lo: i64, mut hi: i64, mut f: impl FnMut(i64) -> Expected) -> (i64, Expected) {
    while hi - lo > 2 {
        let m1 = lo + (hi - lo) / 3;
        let m2 = hi - (hi - lo) / 3;
        if f(m1).total() <= f(m2).total() {
            hi = m2 - 1;
        } else {
            lo = m1 + 1;
        }
    }
    let mut best = (lo, f(lo));
    for x in lo + 1..=hi {
        let e = f(x);
        if e.total() < best.1.total() {
            best = (x, e);
        }
    }
    best
}

impl Rules {
    /// The least expected-cost option of `inst`; `None` for a type that measures none of
    /// the needs.
    pub(crate) fn cheapest_expected(
        &self,
        inst: &Instance,
        needs: &[Need],
        model: CostModel,
        now: &InPlace,
        catalog: &Catalog,
        driver: Driver,
    ) -> Option<Priced> {
        let per: Vec<Option<f64>> = needs
            .iter()
            .map(|n| Some(inst.capacity(&n.unit)? * inst.performance))
            .collect();
        if per.iter().all(Option::is_none) {
            return None;
        }
        let in_place = needs
            .iter()
            .map(|need| {
                let capacity = catalog.get(&now.instance_type).map_or(0.0, |t| {
                    t.capacity(&need.unit).unwrap_or(0.0) * t.performance * now.count as f64
                });
                expected_excess(&need.levels, &need.values, capacity)
            })
            .collect();
        let horizon_s = needs.iter().map(|n| n.horizon_s).max().unwrap_or(0).max(60);
        let hours = horizon_s as f64 / 3600.0;
        let mut pricer = Pricer {
            inst,
            needs,
            model,
            per: per.clone(),
            stretch: stretches(needs, model.lead_s),
            in_place,
            now: now.clone(),
            same_type: now.instance_type == inst.r#type,
            hours,
            q: 1.0 - (1.0 - inst.interruption_rate).powf(hours),
            excess: vec![Vec::new(); needs.len()],
            none_lost: Vec::new(),
            best: Vec::new(),
        };
        // From the floor to the tail's end plus spares for interrupted spot (two, and three
        // times the interruptions expected), each side of the fleet in place searched alone.
        let lo = self.min_instances.max(0);
        let top = needs
            .iter()
            .zip(&per)
            .filter_map(|(n, p)| Some((tail_end(&n.levels, &n.values, 1e-6) / (*p)?).ceil()))
            .fold(0.0, f64::max);
        let spares = 2.0 + (3.0 * pricer.q * top).ceil();
        let hi = (top + spares).clamp(lo as f64, 1e9) as i64;
        let kink = if now.instance_type == inst.r#type {
            now.count
        } else {
            0
        };
        let share = if inst.spot_price.is_some() {
            self.max_spot_share
        } else {
            0.0
        };
        // The search starts where the risk objective would stand: the SLA quantile's count.
        let start = self.base(inst, needs).0;
        let mut best: Option<(i64, i64, Expected)> = None;
        for (a, b) in [(lo, kink.min(hi)), ((kink + 1).max(lo), hi)] {
            if a > b {
                continue;
            }
            let cap = |n: i64| (share * n as f64).floor() as i64;
            let (n, e) = descend(a, b, start, |n| pricer.best_spot(n, cap(n)).1);
            let s = pricer.best_spot(n, cap(n)).0;
            if best.is_none_or(|b| e.total() < b.2.total() - 1e-12) {
                best = Some((n, s, e));
            }
        }
        let (n, s, e) = best?;
        let risk = self.risk(inst, needs, n, s);
        Some(Priced {
            instance_type: inst.r#type.clone(),
            tier: inst.family_tier.clone(),
            count: n,
            spot_count: s,
            cost_per_hour: e.instances / hours,
            risk,
            feasible: true,
            driver,
            spot_limit: "expected cost",
            expected: Some(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_excess_integrates_the_exceedance() {
        // Half the mass uniform on [0, 2], half at 2 (one level: nothing above it):
        // E[(D - 1)+] = 0.5 x 0.25 + 0.5 x 1.
        assert!((expected_excess(&[0.5], &[2.0], 1.0) - 0.625).abs() < 1e-12);
        assert_eq!(expected_excess(&[0.5], &[2.0], 2.0), 0.0);
        // p10/p50/p90 at 2/4/6: the tail above 6 has density 0.2, so rate 2 and mass
        // 0.1 / 2 = 0.05 beyond; from 5: the trapezoid (0.3 + 0.1) / 2 plus the tail.
        let (l, v) = ([0.1, 0.5, 0.9], [2.0, 4.0, 6.0]);
        assert!((expected_excess(&l, &v, 6.0) - 0.05).abs() < 1e-12);
        assert!((expected_excess(&l, &v, 5.0) - 0.25).abs() < 1e-12);
        assert!((expected_excess(&l, &v, 8.0) - 0.05 * (-4.0f64).exp()).abs() < 1e-12);
        // From zero it is the mean: 0.95 x 2 (first piece) + ... by hand:
        // [0,2]: (1 + 0.9) / 2 x 2 = 1.9; [2,4]: (0.9 + 0.5) = 1.4; [4,6]: 0.6; tail 0.05.
        assert!((expected_excess(&l, &v, 0.0) - 3.95).abs() < 1e-12);
        // A negative capacity counts as none.
        assert_eq!(expected_excess(&l, &v, -3.0), expected_excess(&l, &v, 0.0));
        assert_eq!(expected_excess(&[], &[], 1.0), f64::INFINITY);
    }

    #[test]
    fn a_need_covers_the_stretch_since_its_resource_s_previous_horizon() {
        let need = |r: &str, h: i64| Need {
            resource: r.into(),
            unit: "vcpu".into(),
            horizon_s: h,
            levels: vec![0.5],
            values: vec![1.0],
        };
        let needs = [need("cpu", 900), need("cpu", 3600), need("mem", 3600)];
        // Lead 180 s: 3 of the first 15 minutes wait for launches; the hour's other needs
        // start after the lead.
        let s = stretches(&needs, 180);
        assert_eq!(s, vec![(3.0, 12.0), (0.0, 45.0), (3.0, 57.0)]);
    }

    /// One type: 1 vCPU, 0.06/h on demand, spot at 0.02/h interrupted at 10 % per hour.
    fn catalog(spot: bool) -> Catalog {
        Catalog {
            region: "test".into(),
            snapshot: "test".into(),
            instance: vec![Instance {
                r#type: "a".into(),
                family_tier: "on-demand".into(),
                vcpu: 1.0,
                memory_gib: 4.0,
                network_gbps: 1.0,
                on_demand_price: 0.06,
                spot_price: spot.then_some(0.02),
                interruption_rate: 0.1,
                performance: 1.0,
            }],
        }
    }

    /// Demand over the next hour: half uniform on [0, 2] vCPU, half exactly 2, so
    /// E[(D - n)+] is 1.5, 0.625 and 0 for n = 0, 1, 2.
    fn hour() -> Vec<Need> {
        vec![Need {
            resource: "cpu".into(),
            unit: "vcpu".into(),
            horizon_s: 3600,
            levels: vec![0.5],
            values: vec![2.0],
        }]
    }

    fn rules(price: f64, churn: f64, lead_s: i64, now: InPlace) -> Rules {
        Rules {
            sla_quantile: 0.9,
            max_risk: 0.1,
            max_spot_share: 1.0,
            min_instances: 0,
            budget_per_hour: None,
            cost: Some(CostModel {
                shortfall_price: price,
                churn_cost: churn,
                lead_s,
            }),
            now,
        }
    }

    fn chosen(cat: &Catalog, r: &Rules) -> Priced {
        crate::plan::choose(cat, r, &hour()).unwrap().chosen
    }

    #[test]
    fn the_count_balances_the_instances_price_against_the_shortfall_s() {
        let cat = catalog(false);
        // Cost(n) = 0.06 n + price x 60 min x E[(D - n)+]:
        // at 0.001: 0.09, 0.0975, 0.12 -> none; at 0.0015: 0.135, 0.11625, 0.12 -> one;
        // at 0.01: 0.9, 0.435, 0.12 -> two.
        let none = InPlace::default;
        assert_eq!(chosen(&cat, &rules(0.001, 0.0, 0, none())).count, 0);
        let one = chosen(&cat, &rules(0.0015, 0.0, 0, none()));
        assert_eq!(one.count, 1);
        let e = one.expected.unwrap();
        assert!((e.instances - 0.06).abs() < 1e-12);
        assert!((e.shortfall - 0.05625).abs() < 1e-12);
        assert!((e.short_unit_minutes - 37.5).abs() < 1e-9);
        assert_eq!(chosen(&cat, &rules(0.01, 0.0, 0, none())).count, 2);
    }

    #[test]
    fn launches_serve_after_the_lead_and_changes_cost_churn() {
        let cat = catalog(false);
        // Nothing in place, 30 min lead: two instances still win at 0.01 (0.12 + 30 min x
        // 1.5 x 0.01 = 0.57 against one's 0.6975 and none's 0.9), paying the wait.
        let two = chosen(&cat, &rules(0.01, 0.0, 1800, InPlace::default()));
        assert_eq!(two.count, 2);
        assert!((two.expected.unwrap().shortfall - 0.45).abs() < 1e-12);
        // Two in place at 0.0015: one is cheaper (0.11625 < 0.12) until ending the other
        // costs 0.1 in churn.
        let two_in_place = InPlace {
            instance_type: "a".into(),
            count: 2,
            spot_count: 0,
        };
        assert_eq!(
            chosen(&cat, &rules(0.0015, 0.0, 0, two_in_place.clone())).count,
            1
        );
        let kept = chosen(&cat, &rules(0.0015, 0.1, 0, two_in_place));
        assert_eq!((kept.count, kept.expected.unwrap().churn), (2, 0.0));
    }

    #[test]
    fn spot_is_bought_while_its_saving_outweighs_the_interruptions() {
        // Spot at a third of the price, 10 % interrupted within the hour, an interrupted
        // instance missing half the hour on average. At 0.01 per vCPU-minute, by hand:
        // 3 all spot: E = 0.5 x (P(2 lost) x 0.625 + P(3 lost) x 1.5) = 0.0091875,
        // 0.06 + 0.6 x 0.0091875 = 0.0655125; 2 all spot 0.07825; 4 all spot 0.08072;
        // 2 on demand 0.12.
        let best = chosen(&catalog(true), &rules(0.01, 0.0, 0, InPlace::default()));
        assert_eq!((best.count, best.spot_count), (3, 3));
        assert!((best.expected.unwrap().total() - 0.0655125).abs() < 1e-9);
        assert_eq!(best.decision_tier(), "spot");
    }

    #[test]
    fn a_fleet_of_a_million_is_priced_in_bounded_steps() {
        // Spot losses expected past 50: the normal approximation, never a million terms.
        let need = Need {
            levels: vec![0.1, 0.5, 0.9],
            values: vec![5e5, 1e6, 2e6],
            ..hour()[0].clone()
        };
        let r = rules(0.01, 0.0, 0, InPlace::default());
        let c = crate::plan::choose(&catalog(true), &r, &[need])
            .unwrap()
            .chosen;
        assert!(c.count > 2_000_000 && c.count < 4_000_000, "{}", c.count);
        assert!(c.expected.unwrap().total().is_finite());
    }

    #[test]
    fn the_tail_ends_where_the_exceedance_is_spent() {
        let (l, v) = ([0.1, 0.5, 0.9], [2.0, 4.0, 6.0]);
        let x = tail_end(&l, &v, 1e-4);
        assert!((crate::plan::exceed(&l, &v, x) - 1e-4).abs() < 1e-12);
        assert_eq!(tail_end(&[0.5], &[2.0], 1e-4), 2.0);
    }
}
