"""Statistical confidence of a measured agreement: it is a proportion over n sequences."""

from __future__ import annotations

import math

# scipy.special, not scipy.stats: the same boost inverse (beta.ppf calls it) without the 0.85 s that
# importing scipy.stats adds to every check's start-up on an H100 machine (issue 14, run 25).
from scipy.special import betaincinv


def agreement_lower_bound(agreeing: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound of a binomial proportion.

    With probability ``confidence`` the true agreement is at least this, given ``agreeing`` of
    ``n`` sequences agreed. Equals the lower end of the two-sided exact interval at
    ``2 * confidence - 1``.
    """
    if not 0 <= agreeing <= n or n <= 0:
        raise ValueError(f"need 0 <= agreeing <= n and n > 0, got {agreeing} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if agreeing == 0:
        return 0.0
    return float(betaincinv(agreeing, n - agreeing + 1, 1 - confidence))  # the Beta(k, n-k+1) quantile


def sequences_needed(target: float, confidence: float = 0.95) -> int:
    """Fewest sequences, all agreeing, whose lower bound exceeds ``target``.

    With no disagreement the bound is ``(1 - confidence) ** (1 / n)``.
    """
    if not 0 < target < 1:
        raise ValueError(f"target must be between 0 and 1, got {target}")
    return math.floor(math.log(1 - confidence) / math.log(target)) + 1
