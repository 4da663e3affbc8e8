"""The gate's sequential and non-inferiority rules: operating characteristics on synthetic paired outcomes.

Seeded Monte Carlo; every rate bound allows for Monte Carlo error with an exact
binomial quantile (a correct rule fails a bound with probability < 1e-3).
"""
from math import comb

import numpy as np
import pytest

from vla_rl_ros.learner.gate import RECOMMENDED, GateDecision, decide, make_gate, sign_test_p

TRIALS = 2000


def binom_upper(n: int, p: float, tail: float = 1e-3) -> int:
    """Smallest k with P(Bin(n, p) > k) <= tail."""
    cdf = 0.0
    for k in range(n + 1):
        cdf += comb(n, k) * p ** k * (1 - p) ** (n - k)
        if 1 - cdf <= tail:
            return k
    return n


def paired(rng, p_cand: float, p_inc: float, share: float, n: int) -> tuple[list[bool], list[bool]]:
    """n paired episodes with the given success rates; with probability `share` an episode's difficulty is shared
    (both policies see the same uniform draw), which correlates them without changing the marginals."""
    u1 = rng.random(n)
    u2 = np.where(rng.random(n) < share, u1, rng.random(n))
    return (u1 < p_cand).tolist(), (u2 < p_inc).tolist()


def promote_rate(gate, rng, p_cand, p_inc, share, trials=TRIALS):
    ds = [gate.decide_on(*paired(rng, p_cand, p_inc, share, gate.max_pairs)) for _ in range(trials)]
    return sum(d.promote for d in ds), float(np.mean([d.pairs_used for d in ds]))


@pytest.fixture(scope="module")
def seq():
    return make_gate("sequential", alpha=0.05, max_pairs=60, block=10)


@pytest.fixture(scope="module", params=[dict(margin=0.1, max_pairs=60), RECOMMENDED],
                ids=["margin0.1-60pairs", "learner-default"])
def ni(request):
    kw = {k: v for k, v in request.param.items() if k != "rule"}
    return make_gate("noninferiority", **{"alpha": 0.05, "block": 10, **kw})


@pytest.mark.parametrize("p,share", [(0.5, 0.0), (0.5, 0.7), (0.85, 0.0), (0.2, 0.4)])
def test_sequential_promotes_equal_policies_at_most_at_alpha(seq, p, share):
    k, _ = promote_rate(seq, np.random.default_rng(1), p, p, share)
    assert k <= binom_upper(TRIALS, seq.alpha), f"{k}/{TRIALS} equal candidates promoted"


def test_sequential_boundary_is_calibrated_not_vacuous(seq):
    # the exact bound on P(promote | theta = 1/2) under continuous monitoring is at most alpha and close to it
    assert 0.03 < seq.size_bound <= seq.alpha
    # a walk of only discordant pairs (q = 1) is the finest monitoring a 10-pair block gives: size below the bound
    rng = np.random.default_rng(2)
    k = sum(seq.decide_on(*(lambda w: (w, [not x for x in w]))((rng.random(60) < 0.5).tolist())).promote
            for _ in range(TRIALS))
    assert k <= binom_upper(TRIALS, seq.size_bound)


def test_naive_peeking_would_fail_the_same_check():
    """The check above can fail: re-running the fixed sign test after every block (peeking) at the same alpha."""
    rng = np.random.default_rng(1)
    k = 0
    for _ in range(TRIALS):
        c, i = paired(rng, 0.5, 0.5, 0.0, 60)
        k += any(decide(c[:n], i[:n], 0.05).promote for n in range(10, 61, 10))
    assert k > binom_upper(TRIALS, 0.05)


def test_sequential_detects_a_clearly_better_candidate_early(seq):
    k, mean_pairs = promote_rate(seq, np.random.default_rng(3), 0.8, 0.4, 0.0)
    assert k >= 0.95 * TRIALS
    assert mean_pairs < 0.6 * seq.max_pairs


def test_sequential_rejects_worse_candidates_early(seq):
    k, mean_pairs = promote_rate(seq, np.random.default_rng(4), 0.4, 0.7, 0.0)
    assert k <= binom_upper(TRIALS, 0.001)
    assert mean_pairs < 0.5 * seq.max_pairs


@pytest.mark.parametrize("p_inc,share", [(0.5, 0.0), (0.6, 0.6), (0.9, 0.0), (0.3, 0.3)])
def test_noninferiority_promotes_worse_by_margin_at_most_at_alpha(ni, p_inc, share):
    # exactly the margin worse: the hardest case of "worse by at least the margin"
    k, _ = promote_rate(ni, np.random.default_rng(5), p_inc - ni.margin, p_inc, share)
    assert k <= binom_upper(TRIALS, ni.alpha), f"{k}/{TRIALS} candidates worse by {ni.margin} promoted"


def test_noninferiority_design_size_and_no_margin_is_the_failing_control(ni):
    assert ni.size <= ni.alpha
    # the same check fails for a rule without the margin's protection: a plain "at least as many wins as losses"
    rng = np.random.default_rng(5)
    k = 0
    for _ in range(TRIALS):
        c, i = paired(rng, 0.4, 0.5, 0.0, 60)
        k += sum(c) >= sum(i)
    assert k > binom_upper(TRIALS, ni.alpha)


def test_noninferiority_moves_on_equal_and_better_candidates(ni):
    k_eq, _ = promote_rate(ni, np.random.default_rng(6), 0.6, 0.6, 0.5)
    k_up, mean_pairs = promote_rate(ni, np.random.default_rng(7), 0.8, 0.4, 0.0)
    assert k_eq >= 0.08 * TRIALS  # far more than a superiority test would (at most alpha)
    assert k_up >= 0.99 * TRIALS and mean_pairs < 0.5 * ni.max_pairs


def test_noninferiority_requires_wins_at_least_losses(ni):
    rng = np.random.default_rng(8)
    for _ in range(500):
        d = ni.decide_on(*paired(rng, 0.55, 0.6, 0.5, ni.max_pairs))
        assert not d.promote or d.wins >= d.losses


def test_superiority_rule_reproduces_decide_exactly():
    rng = np.random.default_rng(9)
    for alpha, n in [(0.1, 20), (0.05, 30)]:
        gate = make_gate("superiority", alpha=alpha, max_pairs=n)
        for _ in range(300):
            c, i = paired(rng, rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.9), rng.uniform(0, 0.8), n)
            calls = []

            def block(m, s):
                calls.append((m, s))
                return c[s - 100:s - 100 + m], i[s - 100:s - 100 + m]

            d, ref = gate.run(block, 100), decide(c, i, alpha)
            assert calls == [(n, 100)]  # one block of all n pairs, seeds 100 ..
            for f in ("promote", "wins", "losses", "p_value", "candidate_rate", "incumbent_rate", "reason"):
                assert getattr(d, f) == getattr(ref, f)
            assert d.pairs_used == n and d.rule == "superiority"


def test_run_asks_for_consecutive_seed_blocks_and_stops_early(seq):
    calls = []

    def block(n, s):
        calls.append((n, s))
        return [True] * n, [False] * n  # every pair a win

    d = seq.run(block, 1000)
    assert d.promote and d.rule == "sequential"
    assert calls == [(10, 1000)] and d.pairs_used == 10 and d.wins == 10
    calls.clear()
    d = seq.run(lambda n, s: (calls.append((n, s)), ([True] * n, [True] * n))[1], 0)  # all ties: nothing learned
    assert not d.promote and d.pairs_used <= 60 and [s for _, s in calls] == list(range(0, d.pairs_used, 10))


def test_uneven_last_block_and_bad_block_lengths():
    g = make_gate("noninferiority", max_pairs=25, block=10, margin=0.1)
    assert g.look_points() == [10, 20, 25]
    with pytest.raises(ValueError):
        g.run(lambda n, s: ([True] * n, [True] * (n - 1)), 0)
    with pytest.raises(ValueError):
        make_gate("bogus")


def test_decide_and_sign_test_still_work_positionally():
    assert sign_test_p(4, 0) == pytest.approx(1 / 16)
    d = decide([True] * 6 + [False] * 14, [False] * 20)
    assert isinstance(d, GateDecision) and d.promote and d.wins == 6
    assert GateDecision(True, 1, 0, 0.5, 1.0, 0.0, "x").pairs_used == 0
