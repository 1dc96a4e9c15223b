"""One rule for numbers that users pass in: what counts as an integer or a real, the bounds, and the error.

bool is not a number here (True would otherwise pass as 1); numpy integers and floats are accepted and
converted to Python's int and float, so configs stay JSON-serialisable. Every error names the argument,
the value and what is allowed.
"""

from __future__ import annotations

import math
import numbers

# The smallest temperature anywhere (CoT τ, τ_g, answer temperature). At τ = 1e-10, p = softmax(logits/τ)
# is already exactly one-hot in fp32 for any gap between the top two logits above ~1e-8, and logits up to
# 3e28 still divide without overflowing fp32; much smaller values (1e-40 is below fp32's normal range)
# turn logits/τ into inf and p into NaN.
MIN_TEMPERATURE = 1e-10

# Upper bounds on counts and lengths, so a typo (n=10**9) is refused at once instead of allocating until
# memory runs out. Lengths: the longest context of the models softviz targets (128k tokens). Rollouts per
# call: generate() caps its memory separately (see generate.MAX_ROLLOUT_GB), this bounds the count alone.
MAX_TOKENS = 131_072
MAX_ROLLOUTS = 1_000_000


def is_int(x) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x) -> bool:
    """A finite real number (int or float, Python or numpy), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def integer(name: str, value, low: int | None = None, high: int | None = None, *, why: str = "") -> int:
    """`value` as a Python int in [low, high], or ValueError naming `name`, the value and the allowed range."""
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} = {value!r} is invalid: allowed {_range('an integer', low, high)}{_why(why)}")
    return int(value)


def real(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
         high_open: bool = False, why: str = "") -> float:
    """`value` as a finite Python float in [low, high] (open at either end with low_open / high_open), or
    ValueError."""
    ok = is_real(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name} = {value!r} is invalid: allowed "
                         f"{_range('a finite number', low, high, low_open, high_open)}{_why(why)}")
    return float(value)


def temperature(name: str, value, *, zero: bool, why: str = "") -> float:
    """A sampling temperature: 0 (argmax, when `zero` allows it) or MIN_TEMPERATURE <= τ <= 1e6."""
    if is_real(value) and value == 0 and zero:
        return 0.0
    if not (is_real(value) and MIN_TEMPERATURE <= value <= 1e6):
        allowed = f"{'0 (argmax) or ' if zero else ''}{MIN_TEMPERATURE:g} <= τ <= 1e6"
        tiny = (" (smaller temperatures overflow logits/τ in fp32; the smallest allowed is "
                f"{MIN_TEMPERATURE:g}, already one-hot in practice)") if is_real(value) and 0 < value < MIN_TEMPERATURE else ""
        raise ValueError(f"{name} = {value!r} is invalid: allowed {allowed}{tiny}{_why(why)}")
    return float(value)


def seed(name: str, value) -> int:
    """A seed: an integer >= 0 (strings such as "7" are refused: they hash, and 7 != "7")."""
    return integer(name, value, 0, 2**63 - 1)


def _range(what: str, low, high, low_open: bool = False, high_open: bool = False) -> str:
    below, above = "<" if low_open else "<=", "<" if high_open else "<="
    if low is not None and high is not None:
        return f"{what} with {low} {below} x {above} {high}"
    if low is not None:
        return f"{what} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{what} {above} {high}"
    return what


def _why(why: str) -> str:
    return f" ({why})" if why else ""
