"""Fuzzing at scale: ``--n`` (default 10,000) malformed messages on every topic and service the nodes subscribe
to or serve, with the checks of ``test/test_node_fuzz.py`` (it runs that test with ``VLA_RL_ROS_FUZZ_N``).

Per node: policy_node (joint states, both task poses, camera frames, interventions, estop, model
announcements, a 10x joint-state burst), recorder_node (steps, estop, /rl/episode/reset), twin_node (arm and
gripper commands, /twin/reset), learner_node (/rl/policy_update_result) and teacher_node (episodes, joint
states, poses). The outcome checked for every message: no crash and no unexpected exception in any node, a
hold where the arm is affected and never a command beyond the safety filter's tracking bound, a counter for
every rejection, no invalid row in the store. The cases: test/fuzz_messages.py.

    .venv/bin/python bench/bench_fuzz.py                # 10,000 per topic (on this 2-core machine: long)
    .venv/bin/python bench/bench_fuzz.py --n 1000 -k policy
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# topics / services each test fuzzes, and how many malformed messages each gets per unit of --n
TOPICS = {
    "policy": {"/joint_states": 1, "/task/object_pose": 1, "/task/goal_pose": 1, "/camera/image_raw": 1,
               "/rl/intervention": 1, "/rl/estop": 1, "/rl/policy_update": 1, "/joint_states (10x burst, valid)": 10},
    "recorder": {"/rl/step": 2, "/rl/estop": 1, "/rl/episode/reset (service)": 1},
    "twin": {"/arm_controller/commands": 1, "/gripper_controller/commands": 1, "/twin/reset (service)": 1},
    "learner_and_teacher": {"/rl/policy_update_result": 1, "/rl/episode": 1, "/joint_states": 1,
                            "/task/object_pose": 1, "/task/goal_pose": 1},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="malformed messages per topic (and service calls)")
    ap.add_argument("-k", default="", help="pytest -k expression: run only some nodes (policy, recorder, twin, "
                                           "learner)")
    args = ap.parse_args(argv)
    env = dict(os.environ, VLA_RL_ROS_FUZZ_N=str(args.n))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=0",
           os.path.join(ROOT, "test", "test_node_fuzz.py")] + (["-k", args.k] if args.k else [])
    t0 = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    dt = time.monotonic() - t0
    total = 0
    print(f"\nfuzzing with --n {args.n}: {'all checks passed' if rc == 0 else 'FAILED (pytest exit %d)' % rc} "
          f"in {dt / 60:.1f} min")
    for node, topics in TOPICS.items():
        if args.k and not eval(args.k, {}, {w: w in node for w in ("policy", "recorder", "twin", "learner",
                                                                      "teacher")}):  # the -k expression
            continue
        for topic, k in topics.items():
            print(f"  {node:20s} {topic:36s} {k * args.n:>9,d}")
            total += k * args.n
    print(f"  {'total':57s} {total:>9,d}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
