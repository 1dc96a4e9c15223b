"""Pure statistics under the analysis and the figures: the unbiased pass@k estimator and mean/CI bands.
Numbers in, numbers out: no model, no Trace, no plotting; only math, numpy and softviz.checks."""

from __future__ import annotations

import math
import warnings

import numpy as np

from softviz import checks

BANDS = ("ci95", "std", "iqr")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 − C(n−c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
    (0.25, 1.0, 0.0)
    """
    n, c, k = (checks.integer(name, v) for name, v in (("pass_at_k n", n), ("pass_at_k c", c), ("pass_at_k k", k)))
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # product form avoids huge binomials: C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def band_stats(values: np.ndarray, band: str = "ci95") -> dict[str, np.ndarray]:
    """Per column of a (N, T) array with NaN holes: mean, lo, hi and count of the non-NaN values.

    band: "ci95" (mean ± 1.96 standard errors), "std" (mean ± one standard deviation) or "iqr" (25th-75th
    percentile). Columns with no value give NaN; a single value gives lo = hi = mean.
    """
    if band not in BANDS:
        raise ValueError(f"band must be 'ci95', 'std' or 'iqr', got {band!r}")
    count = np.sum(~np.isnan(values), axis=0)  # (T,)
    safe = np.where(count > 0, count, 1)
    filled = np.nan_to_num(values)
    mean = np.where(count > 0, filled.sum(0) / safe, np.nan)
    var = np.where(count > 1, np.nansum((values - mean) ** 2, axis=0) / np.maximum(count - 1, 1), 0.0)
    sd = np.sqrt(var)
    if band == "iqr":
        with warnings.catch_warnings():  # all-NaN columns (no rollout reached the step) warn
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(values, 25, axis=0), np.nanpercentile(values, 75, axis=0)
    else:
        half = 1.96 * sd / np.sqrt(safe) if band == "ci95" else sd
        lo, hi = mean - half, mean + half
    return {"mean": mean, "lo": lo, "hi": hi, "count": count}


def proportion_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a share `correct / n` (sound near 0 and 1, unlike mean ± 1.96·SE): the interval
    an accuracy on n problems is shown with.

    >>> [round(x, 3) for x in proportion_interval(32, 64)]
    [0.381, 0.619]
    """
    n, correct = checks.integer("proportion_interval n", n, 1), checks.integer("proportion_interval correct", correct, 0)
    if correct > n:
        raise ValueError(f"proportion_interval needs correct <= n, got {correct} of {n}")
    from scipy.stats import binomtest

    ci = binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def t_quantile(q: float, dof: int) -> float:
    """The q-quantile of Student's t with `dof` degrees of freedom (t_quantile(0.975, 2) = 4.303): the factor of
    a 95% interval of a mean over dof + 1 seeds."""
    from scipy.stats import t

    return float(t.ppf(q, dof))


def mean_over_steps(values, lengths) -> float:
    """The mean of (B, T) per-step values over every step that exists (t < lengths[b]): each CoT step of
    each rollout weighs the same. softviz's one definition of "mean CoT entropy". NaN when no step exists."""
    values, lengths = np.asarray(values, dtype=np.float64), np.asarray(lengths)
    valid = np.arange(values.shape[1])[None, :] < lengths[:, None]
    return float(values[valid].mean()) if valid.any() else math.nan
