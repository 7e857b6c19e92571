//! Principal component analysis: the eigen decomposition of the sample covariance (faer),
//! and the choice of how many directions to keep.

use faer::{Mat, Side};

/// The principal directions of the rows of `x` (`n x d`, already centred, `n >= 2`), each of
/// length `d`, largest variance first: as many as explain `variance` (a share of the total)
/// and at most `max`. Rows that do not vary at all (total variance 0) have no principal
/// direction; the first `at_least` of the decomposition's directions are returned then (0: none).
pub fn principal_axes(
    x: &Mat<f64>,
    variance: f64,
    max: usize,
    at_least: usize,
) -> Result<Vec<Vec<f64>>, String> {
    let (n, d) = (x.nrows(), x.ncols());
    if n < 2 || d == 0 {
        return Err(format!(
            "need at least 2 rows of at least 1 column, have {n} x {d}"
        ));
    }
    let cov = (x.transpose() * x) * faer::Scale(1.0 / (n as f64 - 1.0));
    let evd = cov
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| format!("eigen decomposition failed: {e:?}"))?;
    let vals: Vec<f64> = (0..d).map(|i| evd.S()[i].max(0.0)).collect();
    let total: f64 = vals.iter().sum();
    let cap = max.min(d);
    // Eigenvalues ascend: the largest is last.
    let keep = if total > 0.0 {
        let mut acc = 0.0;
        let mut k = 0;
        while k < cap && acc < variance * total {
            acc += vals[d - 1 - k];
            k += 1;
        }
        k
    } else {
        at_least.min(cap)
    };
    Ok((0..keep)
        .map(|k| (0..d).map(|j| evd.U()[(j, d - 1 - k)]).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn centred(rows: &[[f64; 3]]) -> Mat<f64> {
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..3)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        Mat::from_fn(rows.len(), 3, |i, j| rows[i][j] - mean[j])
    }

    #[test]
    fn rows_along_a_line_have_one_axis_and_the_share_decides_how_many() {
        // Along (1, 2, 0), with a little spread along z.
        let rows: Vec<[f64; 3]> = (0..50)
            .map(|i| {
                let t = i as f64;
                [t, 2.0 * t, if i % 2 == 0 { 0.1 } else { -0.1 }]
            })
            .collect();
        let x = centred(&rows);
        let one = principal_axes(&x, 0.9, 16, 0).unwrap();
        assert_eq!(one.len(), 1);
        let (a, b) = (one[0][0], one[0][1]);
        assert!(
            (b / a - 2.0).abs() < 1e-6 && one[0][2].abs() < 1e-3,
            "{one:?}"
        );
        assert_eq!(principal_axes(&x, 1.0, 16, 0).unwrap().len(), 2);
        assert_eq!(principal_axes(&x, 1.0, 1, 0).unwrap().len(), 1);
    }

    #[test]
    fn rows_that_do_not_vary_have_the_axes_asked_for_and_bad_shapes_are_errors() {
        let x = centred(&[[1.0, 2.0, 3.0]; 10]);
        assert!(principal_axes(&x, 0.95, 16, 0).unwrap().is_empty());
        assert_eq!(principal_axes(&x, 0.95, 2, 16).unwrap().len(), 2);
        assert!(principal_axes(&Mat::zeros(1, 3), 0.9, 4, 0).is_err());
        assert!(principal_axes(&Mat::zeros(4, 0), 0.9, 4, 0).is_err());
    }
}
