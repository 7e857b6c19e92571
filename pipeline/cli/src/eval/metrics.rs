//! Detection and interpretation metrics, as the anomaly-detection literature computes them.

/// Best point-wise F1 over all thresholds, and the average precision (area under the
/// precision-recall curve, step-wise as scikit-learn's `average_precision_score`).
pub fn best_f1_and_auprc(scores: &[f64], labels: &[u8]) -> (f64, f64) {
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    if pos == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut best, mut ap, mut last_recall) = (0.0, 0.0, 0.0f64, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        // All steps with the same score are on the same side of any threshold.
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] == 1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        let (p, r) = (tp / (tp + fp), tp / pos);
        if p + r > 0.0 {
            best = best.max(2.0 * p * r / (p + r));
        }
        ap += (r - last_recall) * p;
        last_recall = r;
    }
    (best, ap)
}

/// F1 of the prediction `scores[i] > thresholds[i]` (a threshold per step: it follows the
/// score's level).
pub fn f1_at(scores: &[f64], labels: &[u8], thresholds: &[f64]) -> f64 {
    let (mut tp, mut fp, mut fne) = (0.0, 0.0, 0.0);
    for ((s, l), t) in scores.iter().zip(labels).zip(thresholds) {
        match (s > t, *l == 1) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fne += 1.0,
            _ => {}
        }
    }
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fne)
    }
}

/// Best point-adjusted F1: a labelled segment counts as wholly detected when any of its steps
/// is over the threshold. (Generous by design: random scores reach about 0.9 on SMD.)
pub fn best_f1_pa(scores: &[f64], labels: &[u8]) -> f64 {
    // Events: a normal step adds a false positive at its score; a segment adds its length
    // of true positives at its highest score.
    let mut events: Vec<(f64, f64, f64)> = Vec::new(); // (score, tp, fp)
    let mut pos = 0.0;
    let mut i = 0;
    while i < labels.len() {
        if labels[i] == 1 {
            let mut j = i;
            let mut peak = f64::NEG_INFINITY;
            while j < labels.len() && labels[j] == 1 {
                peak = peak.max(scores[j]);
                j += 1;
            }
            let len = (j - i) as f64;
            pos += len;
            events.push((peak, len, 0.0));
            i = j;
        } else {
            events.push((scores[i], 0.0, 1.0));
            i += 1;
        }
    }
    if pos == 0.0 {
        return f64::NAN;
    }
    events.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut best) = (0.0, 0.0, 0.0f64);
    let mut k = 0;
    while k < events.len() {
        let s = events[k].0;
        while k < events.len() && events[k].0 == s {
            tp += events[k].1;
            fp += events[k].2;
            k += 1;
        }
        let (p, r) = (tp / (tp + fp), tp / pos);
        if p + r > 0.0 {
            best = best.max(2.0 * p * r / (p + r));
        }
    }
    best
}

/// HitRate@P: per labelled segment, the share of the experts' metrics `truth` found among the
/// top ⌊P·|truth|⌋ metrics ranked by `contrib` summed over the segment.
pub fn hit_rate(contrib_sum: &[f64], names: &[String], truth: &[String], p: f64) -> f64 {
    if truth.is_empty() {
        return f64::NAN;
    }
    let k = (p * truth.len() as f64).floor() as usize;
    let mut idx: Vec<usize> = (0..contrib_sum.len()).collect();
    idx.sort_by(|&a, &b| contrib_sum[b].total_cmp(&contrib_sum[a]).then(a.cmp(&b)));
    let hits = idx
        .iter()
        .take(k)
        .filter(|&&i| names.get(i).is_some_and(|n| truth.contains(n)))
        .count();
    hits as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_hand_checked_example() {
        let scores = [0.9, 0.8, 0.1, 0.7, 0.2, 0.3];
        let labels = [1, 1, 0, 0, 1, 0];
        // Thresholds: top 2 -> p 1, r 2/3, F1 0.8; top 5 -> p 3/5, r 1, F1 0.75.
        let (f1, ap) = best_f1_and_auprc(&scores, &labels);
        assert!((f1 - 0.8).abs() < 1e-9, "{f1}");
        // AP = 1/3*1 + 1/3*1 + 1/3*(3/5) = 0.8667.
        assert!((ap - (2.0 / 3.0 + 0.2)).abs() < 1e-9, "{ap}");
        assert!((f1_at(&scores, &labels, &[0.75; 6]) - 0.8).abs() < 1e-9);
        // Point adjustment: segment [0, 2) peaks at 0.9, segment [4] at 0.2.
        let pa = best_f1_pa(&scores, &labels);
        assert!((pa - 0.8).abs() < 1e-9, "{pa}");
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let truth = vec!["c".to_string(), "a".to_string()];
        assert_eq!(hit_rate(&[0.5, 0.1, 0.9], &names, &truth, 1.0), 1.0);
        assert_eq!(hit_rate(&[0.5, 0.9, 0.1], &names, &truth, 1.0), 0.5);
        assert_eq!(
            hit_rate(&[0.5, 0.9, 0.1], &names, &truth, 1.5),
            1.0,
            "top 3 of 3"
        );
    }
}
