"""A reward model learnt from preference labels: an ensemble of small MLPs ``r(s, a)`` and the Bradley–Terry loss.

The maths (Christiano et al. 2017; PEBBLE, Lee et al. 2021)
----------------------------------------------------------
Each member ``e`` of the ensemble is an MLP ``r_e(s, a)`` with a ``tanh``
output, so a tick's reward lies in ``[-1, 1]`` (PEBBLE's choice: a bounded
reward keeps the critic's scale fixed whatever the labels say). A segment
``sigma = (s_t, a_t)_{t0 <= t < t1}`` has the return ``R_e(sigma) = sum_t r_e(s_t, a_t)``.

Bradley–Terry: the probability that a labeller prefers ``sigma_L`` to ``sigma_R`` is::

    P_e(L > R) = exp R_e(L) / (exp R_e(L) + exp R_e(R)) = sigmoid(R_e(L) - R_e(R))

With the label's target ``y`` (``left`` 1, ``right`` 0, ``equal`` 1/2; ``skip``
is not trained on), each member minimises the cross-entropy::

    loss_e = -[ y log sigmoid(R_e(L) - R_e(R)) + (1 - y) log sigmoid(R_e(R) - R_e(L)) ]

(for ``y = 1`` this is the seed's ``-log sigmoid(R(y_w) - R(y_l))``). Its
gradient with respect to the returns is ``dloss/dR_e(L) = sigmoid(R_e(L) - R_e(R)) - y =
-dloss/dR_e(R)``: a wrongly ranked pair pushes the winner's return up and the
loser's down, a correctly ranked one less and less (``test/test_prefs_reward_model.py``
checks the values on a hand-built pair). For ``y = 1/2`` the minimum is at
``R_e(L) = R_e(R)``, loss ``log 2``.

Ensemble. Each member is trained on its own bootstrap resample of the labels
(drawn with replacement, the same size), so members disagree where the labels
do not pin the reward down; that disagreement chooses the next queries
(:func:`~.segments.disagreement_pairs`) and the deployed reward is the members'
mean ``r(s, a) = mean_e r_e(s, a)``.

Saving. :func:`save_reward_model` writes ``<models>/reward/<version>.onnx``
(inputs ``obs [B, obs_dim]`` and ``action [B, action_dim]``; outputs ``reward
[B]``, the ensemble mean, and ``members [B, E]``; the spec, lineage and
version in the same metadata keys as the policies, see
:mod:`vla_rl_ros.algos.export`), the torch weights beside it
(``<version>.pt``, to continue training), and appends a record to
``<models>/reward/registry.jsonl``. The lineage's ``data_range`` says which
labels (ids in the run's preference store, its ``prefs_id``, labellers, how
many of each kind) and which stores the model was fit on.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..algos.networks import ObsNormalizer, mlp
from .onnx_reward import REWARD_DIR, OnnxRewardModel, reward_model_path  # noqa: F401 (re-exported)

ALGORITHM = "reward_bt"


# --------------------------------------------------------------------------- loss
def bt_loss(ret_left: torch.Tensor, ret_right: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry cross-entropy per pair (see the module docstring): ``(..., N)`` returns, ``(N,)`` targets."""
    return F.binary_cross_entropy_with_logits(ret_left - ret_right, target.expand_as(ret_left), reduction="none")


# --------------------------------------------------------------------------- model
class RewardEnsemble(nn.Module):
    """``E`` MLPs ``r_e(s, a)`` in ``[-1, 1]`` over the normalised observation and the action.

    Args:
        obs_dim, action_dim: sizes (from the spec).
        n_members: ensemble size ``E`` (PEBBLE uses 3).
        hidden: each member's hidden sizes.
        use_action: ``False``: ``r_e(s)``, the action ignored (the inputs stay ``(obs, action)``, so the ONNX
            contract and every caller are the same). A task reward that depends on the state alone (the twin's
            do) is then learnt without the spurious action terms a few hundred labels leave in ``r(s, a)``,
            which the actor would otherwise chase directly.
    """

    def __init__(self, obs_dim: int, action_dim: int, n_members: int = 3, hidden: Sequence[int] = (64, 64),
                 use_action: bool = True) -> None:
        super().__init__()
        if n_members < 1:
            raise ValueError("n_members must be >= 1")
        self.obs_dim, self.action_dim, self.n_members, self.hidden = int(obs_dim), int(action_dim), int(n_members), tuple(hidden)
        self.use_action = bool(use_action)
        self.normalizer = ObsNormalizer(self.obs_dim)
        n_in = self.obs_dim + (self.action_dim if self.use_action else 0)
        self.members = nn.ModuleList(mlp(n_in, self.hidden, 1) for _ in range(n_members))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Per-member rewards ``(E, *batch)`` for ``obs (*batch, obs_dim)``, ``action (*batch, action_dim)``."""
        x = torch.cat([self.normalizer(obs), action], -1) if self.use_action else self.normalizer(obs)
        return torch.stack([torch.tanh(m(x).squeeze(-1)) for m in self.members])

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The ensemble mean ``(*batch,)``: the deployed reward."""
        return self(obs, action).mean(0)

    def segment_returns(self, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``R_e`` ``(E, N)`` of ``N`` segments padded to ``L`` ticks: ``obs (N, L, od)``, ``mask (N, L)``."""
        return (self(obs, action) * mask).sum(-1)

    # -- for query selection and evaluation (numpy in, numpy out)
    @torch.no_grad()
    def member_probs(self, pairs: Sequence[tuple[Any, Any]]) -> np.ndarray:
        """``P_e(left > right)`` ``(E, N)`` for pairs of :class:`~.segments.SegmentData`."""
        b = PairBatch.from_segment_data(pairs)
        return torch.sigmoid(self.segment_returns(b.obs_l, b.act_l, b.mask_l)
                             - self.segment_returns(b.obs_r, b.act_r, b.mask_r)).numpy()

    def config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "action_dim": self.action_dim, "n_members": self.n_members,
                "hidden": list(self.hidden), "use_action": self.use_action}


class _MeanAndMembers(nn.Module):
    """The exported graph: ``(obs, action) -> (mean reward [B], member rewards [B, E])``."""

    def __init__(self, model: RewardEnsemble) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.model(obs, action).transpose(0, 1)
        if not self.model.use_action:  # keep the unused input in the graph (the exporter drops unused inputs)
            r = r + 0.0 * action[:, :1]
        return r.mean(-1), r


# --------------------------------------------------------------------------- data
@dataclass
class PairBatch:
    """Labelled pairs as padded tensors: ``obs_* (N, L, od)``, ``act_* (N, L, ad)``, ``mask_* (N, L)``, ``y (N,)``."""

    obs_l: torch.Tensor
    act_l: torch.Tensor
    mask_l: torch.Tensor
    obs_r: torch.Tensor
    act_r: torch.Tensor
    mask_r: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor) -> "PairBatch":
        return PairBatch(*(getattr(self, f)[idx] for f in ("obs_l", "act_l", "mask_l", "obs_r", "act_r", "mask_r", "y")))

    @staticmethod
    def _pad(segs: Sequence[Any], L: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, od, ad = len(segs), segs[0].obs.shape[1], segs[0].actions.shape[1]
        obs, act, mask = np.zeros((n, L, od), np.float32), np.zeros((n, L, ad), np.float32), np.zeros((n, L), np.float32)
        for i, s in enumerate(segs):
            k = len(s.obs)
            obs[i, :k], act[i, :k], mask[i, :k] = s.obs, s.actions, 1.0
        return torch.from_numpy(obs), torch.from_numpy(act), torch.from_numpy(mask)

    @classmethod
    def from_segment_data(cls, pairs: Sequence[tuple[Any, Any]], y: Sequence[float] | None = None) -> "PairBatch":
        if not pairs:
            raise ValueError("no pairs")
        L = max(max(len(a.obs), len(b.obs)) for a, b in pairs)
        left = cls._pad([a for a, _ in pairs], L)
        right = cls._pad([b for _, b in pairs], L)
        yt = torch.full((len(pairs),), float("nan")) if y is None else torch.as_tensor(np.asarray(y, np.float32))
        return cls(*left, *right, yt)


def labelled_pairs(prefs: Sequence[Any], index: Any) -> tuple[PairBatch, list[Any]]:
    """A :class:`PairBatch` of the trainable labels (``skip`` left out) whose episodes ``index`` holds.

    Returns the batch and the labels used (a label whose episode is not loaded, e.g. archived, is left out).
    """
    used, pairs = [], []
    for p in prefs:
        if p.target is None:
            continue
        try:
            pairs.append((index.data(p.left), index.data(p.right)))
        except KeyError:
            continue
        used.append(p)
    if not used:
        raise ValueError("no trainable labels on loaded episodes")
    return PairBatch.from_segment_data(pairs, [p.target for p in used]), used


# --------------------------------------------------------------------------- training
@dataclass
class RewardTrainConfig:
    """Training settings (the defaults are PEBBLE's where it states them).

    Attributes:
        n_members: ensemble size (3).
        hidden: hidden sizes of each member ((64, 64); PEBBLE's 3x256 is far more than 26-d states need).
        steps: Adam steps (1000), each on a minibatch of ``batch_size`` pairs per member.
        batch_size: pairs per member per step (64).
        lr: Adam learning rate (3e-4).
        weight_decay: AdamW decay (1e-4), against overfitting a few hundred labels.
        bootstrap: each member trains on its own resample of the labels (True).
        use_action: ``r(s, a)`` (True) or ``r(s)`` (see :class:`RewardEnsemble`).
        seed: seeds initialisation, bootstrap and minibatches.
    """

    n_members: int = 3
    hidden: tuple[int, ...] = (64, 64)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    bootstrap: bool = True
    use_action: bool = True
    seed: int = 0


def train_reward_model(batch: PairBatch, cfg: RewardTrainConfig | None = None, *, obs_dim: int | None = None,
                       action_dim: int | None = None, model: RewardEnsemble | None = None) -> tuple[RewardEnsemble, list[float]]:
    """Fit an ensemble (a new one, or continue ``model``) on labelled pairs; returns it (eval mode) and the
    mean loss every 50 steps."""
    cfg = cfg or RewardTrainConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = RewardEnsemble(obs_dim or batch.obs_l.shape[-1], action_dim or batch.act_l.shape[-1],
                                   cfg.n_members, cfg.hidden, cfg.use_action)
        valid = torch.cat([batch.obs_l[batch.mask_l > 0], batch.obs_r[batch.mask_r > 0]])
        model.normalizer.fit(valid)
    n, E = len(batch), model.n_members
    sets = [torch.randint(n, (n,), generator=gen) if cfg.bootstrap else torch.arange(n) for _ in range(E)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[float] = []
    model.train()
    for step in range(int(cfg.steps)):
        # One minibatch per member from its own bootstrap set; every member is evaluated on every row
        # and only its own rows count (cheap at these sizes, and one forward pass).
        idx = torch.stack([s[torch.randint(n, (cfg.batch_size,), generator=gen)] for s in sets])  # (E, b)
        b = batch.take(idx.reshape(-1))
        rl = model.segment_returns(b.obs_l, b.act_l, b.mask_l).view(E, E, -1)  # (member, set, b)
        rr = model.segment_returns(b.obs_r, b.act_r, b.mask_r).view(E, E, -1)
        own = torch.arange(E)
        loss = bt_loss(rl[own, own], rr[own, own], b.y.view(E, -1)).mean()
        opt.zero_grad(set_to_none=True)
        (loss * E).backward()  # each member's own mean loss, summed
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append(float(loss.detach()))
    return model.eval(), history


@torch.no_grad()
def agreement(model: RewardEnsemble, batch: PairBatch) -> float:
    """Fraction of the pairs with a strict label (``y`` 0 or 1) that the ensemble mean ranks the same way."""
    strict = (batch.y == 0) | (batch.y == 1)
    if not bool(strict.any()):
        return float("nan")
    d = (model.segment_returns(batch.obs_l, batch.act_l, batch.mask_l)
         - model.segment_returns(batch.obs_r, batch.act_r, batch.mask_r)).mean(0)
    return float(((d > 0) == (batch.y > 0.5))[strict].float().mean())


# --------------------------------------------------------------------------- save / load
def data_range(used: Sequence[Any], prefs_meta: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The lineage's ``data_range`` for a model fit on the labels ``used``."""
    ids = [p.id for p in used]
    kinds: dict[str, int] = {}
    for p in used:
        kinds[p.label] = kinds.get(p.label, 0) + 1
    return {"prefs_id": (prefs_meta or {}).get("prefs_id"), "label_ids": [min(ids), max(ids)],
            "n_labels": len(used), "labels": kinds, "labellers": sorted({p.labeller for p in used}),
            "stores": sorted({s.store for p in used for s in (p.left, p.right)}),
            "episodes": len({(s.store, s.episode) for p in used for s in (p.left, p.right)})}


@dataclass(frozen=True)
class SavedRewardModel:
    path: Path          # the .onnx
    weights: Path       # the .pt
    version: str
    sha256: str
    lineage: dict[str, Any]


def _export_proto(module: nn.Module, od: int, ad: int) -> Any:
    import io
    import warnings

    import onnx

    ex = (torch.zeros(2, od), torch.zeros(2, ad))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, ex, buf, input_names=["obs", "action"], output_names=["reward", "members"],
                          dynamo=False, opset_version=17,
                          dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}, "reward": {0: "batch"},
                                        "members": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


def save_reward_model(model: RewardEnsemble, models_dir: str | Path, spec: Any, lineage: Mapping[str, Any], *,
                      atol: float = 1e-5) -> SavedRewardModel:
    """Export ``model`` (verified against ONNX Runtime) and its weights under ``models_dir/reward/``, atomically,
    and append its record to that folder's ``registry.jsonl``; see the module docstring."""
    import onnx
    import onnxruntime as ort

    from ..algos.export import VERSION_KEY, weights_sha256, write_bytes_atomic
    from ..learner.registry import Registry
    from ..spec import LINEAGE_KEY, METADATA_KEY

    if (model.obs_dim, model.action_dim) != (spec.obs_dim, spec.action_dim):
        raise ValueError(f"reward model is ({model.obs_dim}, {model.action_dim}), spec needs "
                         f"({spec.obs_dim}, {spec.action_dim})")
    out_dir = Path(models_dir) / REWARD_DIR
    graph = _MeanAndMembers(copy.deepcopy(model)).eval().requires_grad_(False)
    digest = weights_sha256(graph)
    created = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    version = f"{ALGORITHM}-{created}-{digest[:8]}"
    lin = {"algorithm": ALGORITHM, "parent_version": None, "data_range": None, "training_steps": None,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **dict(lineage),
           "weights_sha256": digest, "ensemble": model.config()}
    proto = _export_proto(graph, spec.obs_dim, spec.action_dim)
    del proto.metadata_props[:]
    for k, v in ((METADATA_KEY, spec.to_json()), (LINEAGE_KEY, json.dumps(lin, sort_keys=True, allow_nan=False)),
                 (VERSION_KEY, version)):
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    gen = torch.Generator().manual_seed(0)
    obs, act = torch.randn(5, spec.obs_dim, generator=gen), torch.rand(5, spec.action_dim, generator=gen) * 2 - 1
    got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"obs": obs.numpy(), "action": act.numpy()})
    with torch.no_grad():
        want = graph(obs, act)
    err = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if not err <= atol:
        raise RuntimeError(f"ONNX Runtime disagrees with PyTorch on the reward model: {err:.3g} > {atol:g}")
    import io

    wbuf = io.BytesIO()
    torch.save({"config": model.config(), "state_dict": model.state_dict(), "lineage": lin, "version": version}, wbuf)
    weights = out_dir / f"{version}.pt"
    write_bytes_atomic(weights, wbuf.getvalue())
    path = out_dir / f"{version}.onnx"
    write_bytes_atomic(path, data)  # the .onnx last: a registry reader never sees it without its weights
    sha = hashlib.sha256(data).hexdigest()
    Registry(out_dir).append({"version": version, "path": path.name, "weights": weights.name, "sha256": sha,
                              "algorithm": ALGORITHM, "parent_version": lin.get("parent_version"),
                              "data_range": lin.get("data_range"), "training_steps": lin.get("training_steps")})
    return SavedRewardModel(path, weights, version, sha, lin)


def load_reward_model(models_dir: str | Path, version: str | None = None) -> RewardEnsemble:
    """The torch ensemble of ``version`` (newest by default), e.g. to continue training it."""
    path = reward_model_path(models_dir, version).with_suffix(".pt")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    c = sd["config"]
    m = RewardEnsemble(c["obs_dim"], c["action_dim"], c["n_members"], tuple(c["hidden"]), c.get("use_action", True))
    m.load_state_dict(sd["state_dict"])
    m.version = sd["version"]
    return m.eval()


def lineage_config(cfg: RewardTrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["hidden"] = list(d["hidden"])
    return d



def fit_run_reward_model(run: str | Path, cfg: RewardTrainConfig | None = None) -> tuple[SavedRewardModel, float]:
    """Fit a reward model on every trainable label of a run's preference store (``vla-rl-ros label RUN --fit``)
    and save it as the run's newest (``<run>/models/reward/``), the previous newest named as its parent.

    Returns the saved model and its agreement with the labels it was fit on (``equal`` left out).
    """
    from ..buffer import open_run
    from .segments import EpisodeIndex
    from .store import PreferenceStore

    cfg = cfg or RewardTrainConfig()
    r = open_run(run)
    with PreferenceStore(r.path, create=False, readonly=True) as store:
        prefs, meta = store.labels(trainable=True), store.meta()
    batch, used = labelled_pairs(prefs, EpisodeIndex.from_paths([r.path]))
    try:
        parent = OnnxRewardModel(reward_model_path(r.models_dir)).version
    except FileNotFoundError:
        parent = None
    model, _ = train_reward_model(batch, cfg, obs_dim=r.spec.obs_dim, action_dim=r.spec.action_dim)
    saved = save_reward_model(model, r.models_dir, r.spec, {
        "algorithm": ALGORITHM, "parent_version": parent, "data_range": data_range(used, meta),
        "training_steps": int(cfg.steps), "config": lineage_config(cfg)})
    return saved, agreement(model, batch)
