"""The twin gate: a candidate reaches the arm only if it beats the incumbent in the twin.

Both policies run the *same* N seeded episodes (a fresh block of seeds each
gate, so candidates cannot overfit the gate). The comparison is paired: only
episodes where exactly one of them succeeded carry information. With ``b`` =
episodes only the candidate solved and ``c`` = episodes only the incumbent
solved, the candidate is promoted when

    b > c   and   P(X >= b | X ~ Binomial(b + c, 1/2)) <= alpha

i.e. an exact one-sided McNemar (sign) test at level ``alpha`` (default 0.1)
rejects "the candidate is no better". With N = 20 episodes this needs, for
example, 4 wins and 0 losses (p = 0.0625), or 6 wins and 1 loss (p = 0.0625);
a lucky 2:0 does not pass. If neither policy ever fails or ever succeeds,
nothing is learned and the incumbent stays.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb


@dataclass
class GateDecision:
    promote: bool
    wins: int  # candidate-only successes
    losses: int  # incumbent-only successes
    p_value: float
    candidate_rate: float
    incumbent_rate: float
    reason: str


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact binomial p-value P(X >= wins), X ~ Bin(wins + losses, 1/2)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2.0 ** n


def decide(candidate: list[bool], incumbent: list[bool], alpha: float = 0.1) -> GateDecision:
    if len(candidate) != len(incumbent) or not candidate:
        raise ValueError("the gate needs both policies evaluated on the same non-empty list of seeded episodes")
    wins = sum(1 for a, b in zip(candidate, incumbent) if a and not b)
    losses = sum(1 for a, b in zip(candidate, incumbent) if b and not a)
    p = sign_test_p(wins, losses)
    cr = sum(candidate) / len(candidate)
    ir = sum(incumbent) / len(incumbent)
    promote = wins > losses and p <= alpha
    verdict = "promote" if promote else "keep incumbent"
    reason = (f"{verdict}: candidate {100 * cr:.0f}% vs incumbent {100 * ir:.0f}% on {len(candidate)} paired episodes, "
              f"{wins} wins / {losses} losses, one-sided sign test p={p:.3f} (alpha {alpha})")
    return GateDecision(promote, wins, losses, p, cr, ir, reason)
