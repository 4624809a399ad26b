//! Chi-square tails for even degrees of freedom, in log space.
//!
//! For X ~ chi-square with 2n degrees of freedom and m = X/2, the upper tail is
//! a truncated Poisson sum:
//!
//! ```text
//!   Q(X; 2n) = P(chi2 >= X) = e^-m * sum_{i=0}^{n-1} m^i / i!
//!   P(X; 2n) = 1 - Q      = e^-m * sum_{i>=n}    m^i / i!
//! ```
//!
//! SpamBayes computes Q in doubles, which underflows to 0 (and P rounds to 1)
//! once the evidence is strong, so most mail gets I = 0 or 1 exactly and the
//! ranking among them is lost. Here both tails are returned as logarithms: the
//! smaller one is summed directly (the series is well conditioned on its own
//! side of the mode) and the larger one is `ln(1 - small)` via `ln_1p`.

/// Returns `(ln Q, ln P)` for X = `x` and `2 * n` degrees of freedom.
pub fn ln_tails(x: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, f64::NEG_INFINITY);
    }
    let m = (x / 2.0).max(0.0);
    if m == 0.0 {
        return (0.0, f64::NEG_INFINITY);
    }
    let ln_m = m.ln();
    if m >= n as f64 {
        // Upper tail is the small one: n terms, log-sum-exp.
        let mut ln_term = -m; // i = 0: e^-m
        let mut max = ln_term;
        let mut terms = Vec::with_capacity(n);
        terms.push(ln_term);
        for i in 1..n {
            ln_term += ln_m - (i as f64).ln();
            max = max.max(ln_term);
            terms.push(ln_term);
        }
        let ln_q = max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln();
        let ln_p = ln_1m_exp(ln_q);
        (ln_q, ln_p)
    } else {
        // Lower tail is the small one: sum i >= n until the terms vanish. Terms
        // fall by the factor m/(i+1) < 1 from the first one on.
        let mut ln_term = -m + n as f64 * ln_m - ln_factorial(n);
        let first = ln_term;
        let mut sum = 1.0f64; // in units of e^first
        let mut i = n;
        loop {
            i += 1;
            ln_term += ln_m - (i as f64).ln();
            let rel = (ln_term - first).exp();
            sum += rel;
            if rel < 1e-17 * sum || i > n + 100_000 {
                break;
            }
        }
        let ln_p = first + sum.ln();
        let ln_q = ln_1m_exp(ln_p);
        (ln_q, ln_p)
    }
}

/// ln(n!) by summation (n is at most a few thousand here).
fn ln_factorial(n: usize) -> f64 {
    (2..=n).map(|k| (k as f64).ln()).sum()
}

/// ln(1 - e^a) for a <= 0, accurate at both ends.
pub fn ln_1m_exp(a: f64) -> f64 {
    if a >= 0.0 {
        f64::NEG_INFINITY
    } else if a > -std::f64::consts::LN_2 {
        (-a.exp_m1()).ln()
    } else {
        (-a.exp()).ln_1p()
    }
}

/// ln(e^a + e^b).
pub fn ln_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SpamBayes' double-precision chi2Q, for comparison where it is exact enough.
    fn chi2q(x: f64, n: usize) -> f64 {
        let m = x / 2.0;
        let mut term = (-m).exp();
        let mut sum = term;
        for i in 1..n {
            term *= m / i as f64;
            sum += term;
        }
        sum.min(1.0)
    }

    #[test]
    fn matches_direct_sum_in_the_middle() {
        for &(x, n) in &[(1.0, 1), (10.0, 5), (30.0, 20), (50.0, 20), (200.0, 120), (3.0, 40)] {
            let (lq, lp) = ln_tails(x, n);
            let q = chi2q(x, n);
            assert!((lq.exp() - q).abs() < 1e-9, "Q x={x} n={n}: {} vs {q}", lq.exp());
            assert!((lp.exp() - (1.0 - q)).abs() < 1e-9, "P x={x} n={n}");
        }
    }

    #[test]
    fn keeps_resolution_where_doubles_saturate() {
        // Both underflow to exactly 0 in SpamBayes' arithmetic, but they differ.
        let (a, _) = ln_tails(3000.0, 50);
        let (b, _) = ln_tails(3100.0, 50);
        assert!(a.is_finite() && b.is_finite());
        assert!(a > b);
        assert_eq!(chi2q(3000.0, 50), 0.0);
        // Lower tail far below the mode.
        let (_, p1) = ln_tails(0.5, 100);
        let (_, p2) = ln_tails(0.4, 100);
        assert!(p1.is_finite() && p1 > p2);
    }

    #[test]
    fn log_helpers() {
        assert!((ln_add_exp(0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
        assert!((ln_1m_exp((0.25f64).ln()) - 0.75f64.ln()).abs() < 1e-15);
        assert_eq!(ln_add_exp(f64::NEG_INFINITY, -3.0), -3.0);
    }
}
