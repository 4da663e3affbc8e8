"""The twin gate: a candidate reaches the arm only if the twin says it is good enough.

Both policies run the *same* seeded episodes (a fresh block of seeds each
gate, so candidates cannot overfit the gate; episode ``i`` uses seed
``seed + i``, see :mod:`.evaluate`). The comparison is paired. Per pair the
outcome is a *win* (only the candidate succeeded), a *loss* (only the
incumbent succeeded) or a tie. Write ``pW``, ``pL`` for their probabilities,
``q = pW + pL`` for the discordance rate and ``theta = pW / q`` for
P(candidate wins | discordant). The difference of success rates is
``Delta = p_cand - p_inc = pW - pL = q (2 theta - 1)``; so ``theta <= 1/2``
exactly when the candidate is no better, whatever the two policies'
correlation.

Three rules, all behind one driver (:func:`make_gate`, :class:`GateRule`)::

    gate = make_gate("noninferiority", alpha=0.05, max_pairs=60, block=10, margin=0.1)
    d = gate.run(evaluate_block, seed)      # evaluate_block(n, seed) -> (candidate[n], incumbent[n])
    d.promote, d.pairs_used, d.reason

``evaluate_block(n, s)`` must evaluate *both* policies on episodes with seeds
``s, s + 1, ..., s + n - 1`` and return their success lists. ``run`` asks for
blocks ``seed, seed + block, ...`` and never for more than ``max_pairs``
episodes, so a caller that spaces gate seeds by ``gate.max_pairs`` never
reuses a seed.

``"superiority"`` (:class:`FixedSignTest`, today's rule)
    All ``max_pairs`` pairs, then :func:`decide`: promote when ``b > c`` and
    the exact one-sided sign (McNemar) test ``P(X >= b | X ~ Bin(b + c, 1/2))
    <= alpha`` (``b`` wins, ``c`` losses). Type-I error (promoting a candidate
    that is no better) <= alpha exactly (the conditional test is exact for
    every q). Needs significant improvement; no early stop.

``"sequential"`` (:class:`SequentialSPRT`): a truncated Wald SPRT on the discordant pairs
    H0: theta = 1/2 against H1: theta = p1 (default 0.75: the candidate wins
    three of every four discordant pairs, e.g. 60% -> 75% success with
    independent failures, or 50% -> 60% with q = 0.2). After each block, with
    ``W`` wins and ``L`` losses so far,

        LLR = W log(2 p1) + L log(2 (1 - p1))

    promote when ``LLR >= log A``; keep the incumbent when ``LLR <= log B``
    with Wald's ``B = beta / (1 - alpha)``, or when ``log A`` can no longer be
    reached in the pairs left (curtailment: changes no decision), or at
    ``max_pairs`` (truncation: keep). ``log A`` is not Wald's approximation
    ``log((1 - beta) / alpha)`` but is *calibrated exactly*: the smallest
    attainable LLR value ``t`` with

        P_{theta = 1/2}( max_{n <= max_pairs} LLR_n >= t ) <= alpha,

    computed by dynamic programming over the discordant-pair random walk
    monitored after *every* discordant pair (at most ``max_pairs`` of them).
    Guarantee: P(promote) <= alpha for every candidate with theta <= 1/2
    (i.e. p_cand <= p_inc), every correlation / discordance rate, every block
    size: the gate only sees the walk at some of its steps (block ends; the
    signs of the discordant pairs are iid Bernoulli(theta) independently of
    which pairs are discordant), early rejection only removes promotions, and
    the crossing probability increases with theta (coupling), so theta = 1/2
    is the worst case. The realised rate is below alpha (block looks, the
    futility stop); the reported ``p_value`` is the exact sequential p-value
    ``P_{1/2}(max LLR >= observed max LLR)`` (promote iff it is <= alpha).
    Power and mean pairs depend on q; with the defaults (alpha 0.05, beta
    0.2, p1 0.75, max_pairs 60, block 10) docs/bench/gate.md measures e.g.
    80% vs 40% (independent): 99% promoted after 27 pairs on average; 70% vs
    50%: 49-68%; equal 50%/50% policies: 2% promoted, kept after 29-40 pairs.

``"noninferiority"`` (:class:`NonInferiority`): group-sequential, exact unconditional
    H0: Delta <= -margin (the candidate is worse by at least the margin)
    against H1: Delta > -margin. Statistic at a look after ``n`` pairs: the
    score statistic for a paired difference (Tango 1998),

        Z = (W - L + n margin) / sqrt(n (2 pL~ - margin (1 + margin)))

    with ``pL~`` the maximum-likelihood loss rate under the constraint
    ``pW - pL = -margin`` (closed form). Promote at a look when ``Z >= c``
    and (``require_wins``, default) ``W >= L``; keep early when ``Z <= z_fut``
    (futility, default -1; the last look keeps otherwise). Both regions are
    made monotone (promotion: an upper set in (W up, L down); futility: a
    lower set), and the single critical value ``c`` (the same at every look,
    Pocock-type) is the smallest with

        sup_{pL in grid} P_{pW = pL - margin}( promote at some look ) <= alpha

    computed exactly by dynamic programming over the trinomial (W, L) path,
    through the same looks, futility stops and ``W >= L`` requirement, on a
    ``grid``-point (default 121) grid of the nuisance ``pL`` in
    ``[margin, (1 + margin) / 2]``. Every parameter with Delta < -margin is
    stochastically dominated (per pair, in the order loss < tie < win) by one
    on the boundary, and the promotion event is monotone, so the boundary is
    the worst case. Guarantee: P(promote a candidate worse by >= margin)
    <= alpha (up to the nuisance grid's resolution; the tests check it by
    simulation), for every correlation. ``p_value`` is the nominal one-sided
    normal p of ``Z`` (informational; the rule is ``Z >= c``).

The continual learner's default (:data:`RECOMMENDED`, ``LearnerConfig``):
``make_gate("noninferiority", alpha=0.05, max_pairs=100, block=10,
margin=0.05, require_wins=True)``. The loop's behaviour policy only changes at
promotions, so the gate should let through any candidate that is *not
worse*, not only those that prove themselves better; what it must never do
is regress the arm. This rule promotes a candidate worse by 5 points at
most 5% of the time (the guarantee), and never one that lost more paired
episodes than it won (so a small regression must also look like a non-loss
on the very episodes that were run). Its measured promotion rates against
improvements, equal candidates and regressions, beside the others', are in
docs/bench/gate.md (``bench/bench_gate.py``). Choose ``"sequential"`` when
every promotion must be a demonstrated improvement (type-I 5% against *any*
no-better candidate), at a lower promotion rate; it also stops early.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from math import comb
from typing import Callable

import numpy as np

EvaluateBlock = Callable[[int, int], "tuple[list[bool], list[bool]]"]


@dataclass
class GateDecision:
    promote: bool
    wins: int  # candidate-only successes
    losses: int  # incumbent-only successes
    p_value: float
    candidate_rate: float
    incumbent_rate: float
    reason: str
    pairs_used: int = 0  # paired episodes evaluated (0 from plain `decide`: see len of the lists)
    rule: str = "superiority"
    looks: int = 1  # decisions points consulted
    statistic: float = float("nan")  # LLR (sequential) or score Z (non-inferiority)
    threshold: float = float("nan")  # the promotion boundary on that statistic
    candidate: list[bool] = field(default_factory=list, repr=False)
    incumbent: list[bool] = field(default_factory=list, repr=False)


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact binomial p-value P(X >= wins), X ~ Bin(wins + losses, 1/2)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2.0 ** n


def _counts(candidate: list[bool], incumbent: list[bool]) -> tuple[int, int]:
    wins = sum(1 for a, b in zip(candidate, incumbent) if a and not b)
    losses = sum(1 for a, b in zip(candidate, incumbent) if b and not a)
    return wins, losses


def decide(candidate: list[bool], incumbent: list[bool], alpha: float = 0.1) -> GateDecision:
    if len(candidate) != len(incumbent) or not candidate:
        raise ValueError("the gate needs both policies evaluated on the same non-empty list of seeded episodes")
    wins, losses = _counts(candidate, incumbent)
    p = sign_test_p(wins, losses)
    cr = sum(candidate) / len(candidate)
    ir = sum(incumbent) / len(incumbent)
    promote = wins > losses and p <= alpha
    verdict = "promote" if promote else "keep incumbent"
    reason = (f"{verdict}: candidate {100 * cr:.0f}% vs incumbent {100 * ir:.0f}% on {len(candidate)} paired episodes, "
              f"{wins} wins / {losses} losses, one-sided sign test p={p:.3f} (alpha {alpha})")
    return GateDecision(promote, wins, losses, p, cr, ir, reason)


# ---------------------------------------------------------------- the driver
class GateRule:
    """A promotion rule over blocks of paired episodes. Subclasses implement :meth:`_look`."""

    name = "rule"

    def __init__(self, alpha: float, max_pairs: int, block: int):
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if max_pairs < 1 or block < 1:
            raise ValueError("max_pairs and block must be >= 1")
        self.alpha, self.max_pairs, self.block = float(alpha), int(max_pairs), int(min(block, max_pairs))

    def look_points(self) -> list[int]:
        """Pair counts after which the rule decides: block, 2 block, ..., max_pairs."""
        pts = list(range(self.block, self.max_pairs, self.block))
        return pts + [self.max_pairs]

    def _look(self, wins: int, losses: int, n: int, final: bool) -> tuple[str, float, float, float]:
        """-> (action in {'promote', 'reject', 'continue'}, statistic, threshold, p_value)."""
        raise NotImplementedError

    def run(self, evaluate_block: EvaluateBlock, seed: int) -> GateDecision:
        """Evaluate blocks of paired episodes (seeds ``seed + used ...``) until the rule decides."""
        cand: list[bool] = []
        inc: list[bool] = []
        pts = self.look_points()
        for k, n_at in enumerate(pts):
            n = n_at - len(cand)
            c, i = evaluate_block(n, seed + len(cand))
            c, i = [bool(x) for x in c], [bool(x) for x in i]
            if len(c) != n or len(i) != n:
                raise ValueError(f"evaluate_block({n}, ...) returned {len(c)} candidate / {len(i)} incumbent outcomes")
            cand += c
            inc += i
            d = self._decide_at(cand, inc, k + 1, final=k == len(pts) - 1)
            if d is not None:
                return d
        raise AssertionError("unreachable: the last look always decides")

    def decide_on(self, candidate: list[bool], incumbent: list[bool]) -> GateDecision:
        """The decision ``run`` would reach if the paired outcomes were these (len >= max_pairs, or it keeps)."""
        if len(candidate) != len(incumbent):
            raise ValueError("paired outcomes must have equal length")
        cand, inc = list(candidate), list(incumbent)
        return self.run(lambda n, s: (cand[s:s + n], inc[s:s + n]), 0)

    def _decide_at(self, cand: list[bool], inc: list[bool], looks: int, final: bool) -> GateDecision | None:
        w, l = _counts(cand, inc)
        n = len(cand)
        action, stat, thr, p = self._look(w, l, n, final)
        if action == "continue":
            return None
        promote = action == "promote"
        cr, ir = sum(cand) / n, sum(inc) / n
        reason = (f"{'promote' if promote else 'keep incumbent'} ({self.name}, {self.describe()}): "
                  f"candidate {100 * cr:.0f}% vs incumbent {100 * ir:.0f}% on {n} paired episodes "
                  f"({looks} look{'s' if looks > 1 else ''}), {w} wins / {l} losses, {self._explain(stat, thr, p)}")
        return GateDecision(promote, w, l, p, cr, ir, reason, pairs_used=n, rule=self.name, looks=looks,
                            statistic=stat, threshold=thr, candidate=list(cand), incumbent=list(inc))

    def describe(self) -> str:
        return f"alpha {self.alpha}, up to {self.max_pairs} pairs in blocks of {self.block}"

    def _explain(self, stat: float, thr: float, p: float) -> str:
        return f"p={p:.3f}"


class FixedSignTest(GateRule):
    """Today's gate: all ``max_pairs`` pairs, then :func:`decide` (exact one-sided sign test)."""

    name = "superiority"

    def __init__(self, alpha: float = 0.1, max_pairs: int = 20, block: int | None = None):
        super().__init__(alpha, max_pairs, max_pairs)

    def look_points(self) -> list[int]:
        return [self.max_pairs]

    def _decide_at(self, cand, inc, looks, final):
        d = decide(cand, inc, self.alpha)
        d.pairs_used, d.rule, d.looks, d.candidate, d.incumbent = len(cand), self.name, looks, list(cand), list(inc)
        return d


@lru_cache(maxsize=64)
def _sprt_crossing_table(a: float, b: float, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Attainable LLR values t (sorted) and P_{1/2}(max_{n <= max_n} LLR_n >= t) for each (continuous monitoring)."""
    vals = np.unique(np.round([w * a + l * b for n in range(1, max_n + 1) for w in range(n + 1) for l in [n - w]], 12))
    vals = vals[vals > 0]

    def crossing(t: float) -> float:
        alive = np.array([1.0])  # mass by number of wins, before any discordant pair
        crossed = 0.0
        for n in range(1, max_n + 1):
            nxt = np.zeros(n + 1)
            nxt[1:] += 0.5 * alive
            nxt[:-1] += 0.5 * alive
            w = np.arange(n + 1)
            hit = w * a + (n - w) * b >= t - 1e-9
            crossed += nxt[hit].sum()
            nxt[hit] = 0.0
            alive = nxt
        return crossed

    probs = np.array([crossing(t) for t in vals])
    return vals, probs


class SequentialSPRT(GateRule):
    """Truncated SPRT on the discordant pairs, H0 theta = 1/2 vs H1 theta = p1, exact upper boundary (module doc)."""

    name = "sequential"

    def __init__(self, alpha: float = 0.05, max_pairs: int = 60, block: int = 10, p1: float = 0.75, beta: float = 0.2):
        super().__init__(alpha, max_pairs, block)
        if not 0.5 < p1 < 1:
            raise ValueError("p1 must be in (1/2, 1)")
        if not 0 < beta < 1 - alpha:
            raise ValueError("beta must be in (0, 1 - alpha)")
        self.p1, self.beta = float(p1), float(beta)
        self.a, self.b = math.log(2 * p1), math.log(2 * (1 - p1))
        self._vals, self._probs = _sprt_crossing_table(round(self.a, 12), round(self.b, 12), self.max_pairs)
        ok = np.nonzero(self._probs <= self.alpha)[0]
        self.log_a = float(self._vals[ok[0]]) if len(ok) else math.inf
        self.size_bound = float(self._probs[ok[0]]) if len(ok) else 0.0  # P_{1/2}(ever promote), continuous looks
        self.log_b = math.log(self.beta / (1 - self.alpha))
        self._max_llr = 0.0

    def p_value(self, max_llr: float) -> float:
        """Exact sequential p-value: P_{1/2}(the walk ever reaches max_llr within max_pairs discordant pairs)."""
        i = np.searchsorted(self._vals, max_llr - 1e-9)
        return 1.0 if max_llr <= 0 else (float(self._probs[i]) if i < len(self._probs) else 0.0)

    def run(self, evaluate_block, seed):
        self._max_llr = 0.0
        return super().run(evaluate_block, seed)

    def _look(self, w, l, n, final):
        llr = w * self.a + l * self.b
        self._max_llr = max(self._max_llr, llr)
        p = self.p_value(self._max_llr)
        if llr >= self.log_a - 1e-9:
            return "promote", llr, self.log_a, p
        if final or llr <= self.log_b or llr + (self.max_pairs - n) * self.a < self.log_a - 1e-9:
            return "reject", llr, self.log_a, p
        return "continue", llr, self.log_a, p

    def describe(self):
        return f"SPRT theta 1/2 vs {self.p1}, {super().describe()}"

    def _explain(self, stat, thr, p):
        return (f"log-LR {stat:.2f} (promote >= {thr:.2f}, keep <= {self.log_b:.2f}), "
                f"sequential p={p:.3f}")


def _score_z(w: np.ndarray, l: np.ndarray, n: int, margin: float) -> np.ndarray:
    """Tango's score statistic for H0: pW - pL = -margin on n pairs with w wins, l losses."""
    d0 = -margin
    A = 2.0 * n
    B = -w - l + (2.0 * n - w + l) * d0
    C = -l * d0 * (1 - d0)
    pl = (-B + np.sqrt(np.maximum(B * B - 4 * A * C, 0.0))) / (2 * A)
    v = n * (2 * pl + d0 * (1 - d0))
    num = w - l - n * d0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(v > 1e-12, num / np.sqrt(np.maximum(v, 1e-300)), np.where(num > 0, np.inf, 0.0))
    return z


def _upper_set(m: np.ndarray) -> np.ndarray:
    """Largest upper set (w up, l down) inside m; m[w, l] over a square grid, invalid cells already True."""
    r = np.flip(np.logical_and.accumulate(np.flip(m, 0), 0), 0)
    return np.logical_and.accumulate(r, 1)


def _lower_set(m: np.ndarray) -> np.ndarray:
    r = np.logical_and.accumulate(m, 0)
    return np.flip(np.logical_and.accumulate(np.flip(r, 1), 1), 1)


class NonInferiority(GateRule):
    """Group-sequential exact unconditional non-inferiority test with margin (module doc)."""

    name = "noninferiority"

    def __init__(self, alpha: float = 0.05, max_pairs: int = 60, block: int = 10, margin: float = 0.1,
                 require_wins: bool = True, futility_z: float | None = -1.0, grid: int = 121):
        super().__init__(alpha, max_pairs, block)
        if not 0 <= margin < 1:
            raise ValueError("margin must be in [0, 1)")
        self.margin, self.require_wins = float(margin), bool(require_wins)
        self.futility_z = None if futility_z is None else float(futility_z)
        self.grid = int(grid)
        self.c, self.size, self._R, self._F = _ni_design(self.margin, tuple(self.look_points()), self.alpha,
                                                         self.require_wins, self.futility_z, self.grid)

    def _look(self, w, l, n, final):
        k = self.look_points().index(n)
        z = float(_score_z(np.array(w, float), np.array(l, float), n, self.margin))
        p = 0.5 * math.erfc(z / math.sqrt(2)) if math.isfinite(z) else (0.0 if z > 0 else 1.0)
        if self._R[k][w, l]:
            return "promote", z, self.c, p
        if final or self._F[k][w, l]:
            return "reject", z, self.c, p
        return "continue", z, self.c, p

    def describe(self):
        extra = ", wins >= losses" if self.require_wins else ""
        return f"margin {self.margin}{extra}, {super().describe()}"

    def _explain(self, stat, thr, p):
        return (f"score Z {stat:.2f} for 'worse by {self.margin}' (promote >= {thr:.2f}; exact size {self.size:.3f}), "
                f"nominal p={p:.3f}")


def _ni_regions(margin, looks, c, require_wins, futility_z):
    N = looks[-1]
    w = np.arange(N + 1, dtype=float)[:, None]
    l = np.arange(N + 1, dtype=float)[None, :]
    R, F = [], []
    for k, n in enumerate(looks):
        valid = (w + l) <= n
        z = _score_z(np.broadcast_to(w, (N + 1, N + 1)), np.broadcast_to(l, (N + 1, N + 1)), n, margin)
        raw = z >= c
        if require_wins:
            raw &= w >= l
        r = _upper_set(raw | ~valid) & valid
        if futility_z is not None and k < len(looks) - 1:
            f = _lower_set((z <= futility_z) | ~valid) & valid & ~r
        else:
            f = np.zeros_like(r)
        R.append(r)
        F.append(f)
    return R, F


def _ni_size(margin, looks, R, F, grid):
    """sup over the nuisance grid of P(promote at some look) on the boundary pW = pL - margin."""
    N = looks[-1]
    pl = np.linspace(margin, (1 + margin) / 2, grid)
    pw = pl - margin
    pt = np.clip(1 - pl - pw, 0.0, 1.0)
    P = np.zeros((grid, N + 1, N + 1))
    P[:, 0, 0] = 1.0
    promoted = np.zeros(grid)
    done = 0
    for k, n in enumerate(looks):
        for _ in range(n - done):
            Q = pt[:, None, None] * P
            Q[:, 1:, :] += pw[:, None, None] * P[:, :-1, :]
            Q[:, :, 1:] += pl[:, None, None] * P[:, :, :-1]
            P = Q
        done = n
        promoted += (P * R[k]).sum(axis=(1, 2))
        P = P * ~(R[k] | F[k])
    return float(promoted.max())


@lru_cache(maxsize=32)
def _ni_design(margin, looks, alpha, require_wins, futility_z, grid):
    N = looks[-1]
    w = np.arange(N + 1, dtype=float)[:, None]
    l = np.arange(N + 1, dtype=float)[None, :]
    cands = set()
    for n in looks:
        z = _score_z(np.broadcast_to(w, (N + 1, N + 1)), np.broadcast_to(l, (N + 1, N + 1)), n, margin)
        z = z[((w + l) <= n) & np.isfinite(z)]
        cands.update(np.round(z, 10).tolist())
    cands = np.array(sorted(c for c in cands if c > 0) + [np.inf])
    lo, hi = 0, len(cands) - 1  # size(cands[hi]) <= alpha (inf: never promote... except inf cells)
    while lo < hi:
        mid = (lo + hi) // 2
        R, F = _ni_regions(margin, looks, cands[mid] - 1e-9, require_wins, futility_z)
        if _ni_size(margin, looks, R, F, grid) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    c = float(cands[lo])
    R, F = _ni_regions(margin, looks, c - 1e-9, require_wins, futility_z)
    return c, _ni_size(margin, looks, R, F, grid), R, F


RULES = {"superiority": FixedSignTest, "sequential": SequentialSPRT, "noninferiority": NonInferiority}
RECOMMENDED = dict(rule="noninferiority", alpha=0.05, max_pairs=100, block=10, margin=0.05, require_wins=True)


def make_gate(rule: str = "noninferiority", alpha: float = 0.05, max_pairs: int = 60, block: int = 10,
              margin: float = 0.1, **kw) -> GateRule:
    """Build a gate rule by name: 'superiority' (fixed N = max_pairs sign test, == :func:`decide`),
    'sequential' (SPRT; kw: p1, beta) or 'noninferiority' (kw: require_wins, futility_z, grid)."""
    if rule == "superiority":
        return FixedSignTest(alpha, max_pairs)
    if rule == "sequential":
        return SequentialSPRT(alpha, max_pairs, block, **kw)
    if rule == "noninferiority":
        return NonInferiority(alpha, max_pairs, block, margin, **kw)
    raise ValueError(f"unknown gate rule {rule!r}; one of {sorted(RULES)}")
