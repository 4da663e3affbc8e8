"""A short SAC run measurably improves the twin's reach success over its starting policy."""
import torch

from vla_rl_ros.algos.online import train_online
from vla_rl_ros.algos.sac import SACConfig
from vla_rl_ros.learner.evaluate import evaluate_policy
from vla_rl_ros.twin.env import TwinEnv


def test_sac_improves_reach_success_in_the_twin():
    torch.set_num_threads(1)
    evals = []

    def success(sac):
        r = evaluate_policy(lambda o: sac.act(o, deterministic=True), "reach", episodes=20, seed=10_000)
        evals.append(r.success_rate)
        return r.success_rate

    cfg = SACConfig(learning_starts=1000, init_alpha=0.1)
    sac, hist = train_online(TwinEnv(task="reach"), cfg, steps=3500, seed=0, progress=False,
                             eval_every=3500, eval_fn=success)
    start, end = hist[0][1], hist[-1][1]
    # seed 0 measured 0 % → 30-65 % at 3,000-4,000 steps (and 100 % by 4,500 in the benchmark); generous margin
    assert end >= start + 0.2, hist
