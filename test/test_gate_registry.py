"""The twin gate's promotion rule and the models registry."""

import pytest

from vla_rl_ros.learner.gate import decide, sign_test_p
from vla_rl_ros.learner.registry import Registry


def test_sign_test_values():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(4, 0) == pytest.approx(1 / 16)
    assert sign_test_p(6, 1) == pytest.approx(8 / 128)
    assert sign_test_p(2, 0) == pytest.approx(0.25)


def test_gate_promotes_clear_improvement_and_refuses_noise():
    inc = [True] * 8 + [False] * 12
    better = [True] * 14 + [False] * 6  # 6 wins, 0 losses
    assert decide(better, inc).promote
    lucky = [True] * 10 + [False] * 10   # 2 wins, 0 losses: could be luck
    d = decide(lucky, inc)
    assert not d.promote and d.wins == 2 and d.losses == 0
    worse = [True] * 4 + [False] * 16
    assert not decide(worse, inc).promote
    same = list(inc)
    assert not decide(same, inc).promote
    # paired: equal rates but on different episodes is not an improvement
    swapped = [False] * 8 + [True] * 8 + [False] * 4
    assert not decide(swapped, inc).promote
    with pytest.raises(ValueError):
        decide([True], [True, False])


def test_registry_append_incumbent_and_torn_line(tmp_path):
    r = Registry(tmp_path / "models")
    r.append({"version": "a", "promoted": True})
    r.append({"version": "b", "promoted": False})
    with open(r.path, "a") as f:
        f.write('{"version": "c", "prom')  # a crash mid-append
    assert [x["version"] for x in r.records()] == ["a", "b"]
    assert r.incumbent() is None
    r.set_incumbent({"version": "a"})
    assert r.incumbent()["version"] == "a"
    assert not list((tmp_path / "models").glob(".incumbent.*"))
