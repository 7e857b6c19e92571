//! What a booster sees at an origin (see [`super`]), and the matrix of many origins.

use perpetual::Matrix;

/// Lags (steps) every booster sees.
const LAGS: [usize; 9] = [1, 2, 3, 4, 6, 8, 12, 16, 24];
/// Half width (steps) of the neighbourhood averaged one season before the target.
const SEASON_SPAN: usize = 2;
/// Index of the spread over the longest window (4 h) among the features.
const LONG_SPREAD: usize = 1 + LAGS.len() + 5;

/// Fewest past steps an origin needs (the longest lag or window); earlier origins are not
/// forecast (the caller falls back) nor trained on.
pub fn min_history(h: usize) -> usize {
    LAGS[LAGS.len() - 1].max(4 * h) + 1
}

/// The features of origin `o` (index into `y`) for a target `h` steps ahead.
pub(super) fn features(y: &[f64], o: usize, h: usize, season: usize, out: &mut Vec<f64>) {
    let v0 = y[o];
    let at = |i: Option<usize>| i.and_then(|i| y.get(i)).map_or(f64::NAN, |v| v - v0);
    out.push(v0);
    for lag in LAGS {
        out.push(at(o.checked_sub(lag)));
    }
    for w in [4, h.max(2), 4 * h.max(2)] {
        let from = (o + 1).saturating_sub(w);
        let (mean, spread) = mean_spread(&y[from..=o]);
        out.push(mean - v0);
        out.push(spread);
    }
    for back in [season, 2 * season] {
        // The target's phase `back` steps ago, if that is in the past of the origin.
        let t = (o + h).checked_sub(back).filter(|&t| t <= o);
        out.push(at(t));
        let span = t.and_then(|t| {
            let from = t.checked_sub(SEASON_SPAN)?;
            Some(&y[from..=(t + SEASON_SPAN).min(o)])
        });
        out.push(span.map_or(f64::NAN, |s| mean_spread(s).0 - v0));
        out.push(match (t, o.checked_sub(back)) {
            (Some(t), Some(b)) => y[t] - y[b],
            _ => f64::NAN,
        });
    }
}

/// Mean and standard deviation of the finite values (NaN when none).
fn mean_spread(v: &[f64]) -> (f64, f64) {
    let (mut n, mut s, mut ss) = (0.0, 0.0, 0.0);
    for x in v.iter().filter(|x| x.is_finite()) {
        n += 1.0;
        s += x;
        ss += x * x;
    }
    if n == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = s / n;
    (mean, (ss / n - mean * mean).max(0.0).sqrt())
}

/// A column-major matrix of the features of `origins` (each into its series).
pub(super) struct Design {
    columns: Vec<f64>,
    rows: usize,
    width: usize,
    /// Per row, the unit its changes are counted in.
    pub(super) units: Vec<f64>,
}

impl Design {
    /// The rows of origins `at` for a target `h` steps ahead. Every feature but the level is
    /// counted in units of `scale`, plus, when `relative`, the row's own 4 h spread: one
    /// model then serves calm and volatile series alike.
    pub(super) fn of<'a>(
        at: impl ExactSizeIterator<Item = (&'a [f64], usize)>,
        h: usize,
        season: usize,
        scale: f64,
        relative: bool,
    ) -> Design {
        let rows = at.len();
        let mut row = Vec::new();
        let mut by_row = Vec::new();
        let mut units = Vec::with_capacity(rows);
        for (y, o) in at {
            row.clear();
            features(y, o, h, season, &mut row);
            let u = if relative {
                let long = row[LONG_SPREAD];
                scale + if long.is_finite() { long } else { 0.0 }
            } else {
                scale
            };
            for x in row.iter_mut().skip(1) {
                *x /= u;
            }
            units.push(u);
            by_row.extend_from_slice(&row);
        }
        let width = by_row.len().checked_div(rows).unwrap_or(0);
        let mut columns = vec![0.0; by_row.len()];
        for r in 0..rows {
            for c in 0..width {
                columns[c * rows + r] = by_row[r * width + c];
            }
        }
        Design {
            columns,
            rows,
            width,
            units,
        }
    }

    pub(super) fn matrix(&self) -> Matrix<'_, f64> {
        Matrix::new(&self.columns, self.rows, self.width)
    }
}
