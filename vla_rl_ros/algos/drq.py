"""SAC from pixels with DrQ augmentation, in one readable file.

References: Kostrikov, Yarats and Fergus, "Image Augmentation Is All You Need: Regularizing Deep Reinforcement
Learning from Pixels" (DrQ), 2020; Yarats et al., "Mastering Visual Continuous Control: Improved Data-Augmented
Reinforcement Learning" (DrQ-v2), 2021; and SERL (Luo et al., 2024), whose real-robot agents are this, with RLPD's
sampling.

The observation is a camera frame ``I`` (uint8 RGB) and the arm's proprioception ``p`` (joint positions, gripper
width, hand position: :data:`PROPRIO`); where the object and the goal are must be read from the frame. One update
on a batch ``(I, p, a, r, I', p', d)``:

1. **Augment.** ``aug(I)``: pad by ``pad`` pixels (replicating the border) and crop back at a random offset,
   independently per sample and for ``I`` and ``I'`` (DrQ's random shift, K = M = 1).
2. **Critic** (trains the encoder ``f``): ``h = [f(aug I), norm(p)]``, ``a' ~ pi(.|h')`` with ``h'`` from the
   online encoder (detached), ``y = r + gamma (1 - d) (min_i Qtarg_i([ftarg(aug I'), norm(p')], a')
   - alpha log pi(a'|h'))``; loss ``1/2 sum_i mean (Q_i(h, a) - y)^2``. The critic's gradient is the only one
   the encoder gets (SAC-AE / DrQ).
3. **Actor** on the detached ``h``: ``mean(alpha log pi(a~|h) - min_i Q_i(h, a~))``, gradients into the actor
   alone; **temperature** as in SAC (:mod:`.sac`).
4. Polyak: the target critic with ``tau``, the target encoder with ``encoder_tau`` (DrQ: 0.01 and 0.05).

The exported policy (:meth:`PixelSAC.policy_module`) takes the spec's inputs ``obs`` (it reads the proprioception
from it) and ``image_<name>``, and outputs ``tanh(mean)``: a VLA-shaped model with ``chunk_len`` 1 that
``policy_node`` runs in its inference thread and the twin evaluator runs as the node does.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..spec import ImageSpec, Spec
from .networks import EnsembleCritic, ImageEncoder, ObsNormalizer, SquashedGaussianActor

PROPRIO = ("joint_pos", "gripper_width", "ee_pos")
"""The observation segments a pixel policy reads from ``obs``; the object and the goal come from the frame."""


@dataclass
class DrQConfig:
    """Defaults: SAC's (:class:`~.sac.SACConfig`) and DrQ's where they differ (initial temperature 0.1, critic
    tau 0.01, encoder tau 0.05, pad 4, 50 features), sized for a CPU: batch 64 (DrQ: 512 on a GPU). With the
    64x64 frames :func:`train_pixel_sac` renders, an update takes ~65 ms on one busy core of this machine."""

    gamma: float = 0.99
    tau: float = 0.01
    encoder_tau: float = 0.05
    lr: float = 3e-4
    batch_size: int = 64
    hidden: Sequence[int] = (256, 256)
    features: int = 50
    pad: int = 4
    init_alpha: float = 0.1
    target_entropy: float | None = None  # None: -action_dim

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)


def random_shift(img: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation: replicate-pad ``(B, 3, H, W)`` by ``pad`` and crop ``H x W`` back at a random integer
    offset per sample (float output, same value range). One slice copy per sample: on a CPU far cheaper than a
    gather over index grids or ``grid_sample``."""
    if pad <= 0:
        return img.float()
    B, C, H, W = img.shape
    x = nn.functional.pad(img.float(), (pad, pad, pad, pad), mode="replicate")
    off = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator).tolist()
    out = torch.empty(B, C, H, W)
    for b, (oy, ox) in enumerate(off):
        out[b] = x[b, :, oy:oy + H, ox:ox + W]
    return out


def proprio_index(spec: Spec) -> torch.Tensor:
    """Indices of :data:`PROPRIO` in the spec's observation vector."""
    return torch.cat([torch.arange(spec.obs_slice(s).start, spec.obs_slice(s).stop) for s in PROPRIO])


class PixelPolicy(nn.Module):
    """The exported module: ``forward(obs, image) -> tanh(mean)``, ``[B, action_dim]``."""

    def __init__(self, agent: "PixelSAC") -> None:
        super().__init__()
        self.encoder = copy.deepcopy(agent.encoder)
        self.norm = copy.deepcopy(agent.proprio_norm)
        self.actor = copy.deepcopy(agent.actor)
        self.register_buffer("idx", agent.idx.clone())

    def forward(self, obs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.encoder(image), self.norm(obs.index_select(1, self.idx))], -1)
        return self.actor.deterministic(h)


class PixelSAC:
    """SAC + DrQ for a spec with one camera (``spec.images[0]``)."""

    def __init__(self, spec: Spec, cfg: DrQConfig | None = None, seed: int = 0) -> None:
        if len(spec.images) != 1:
            raise ValueError("PixelSAC reads exactly one camera: give the spec one image")
        self.spec, self.cfg = spec, cfg or DrQConfig()
        c = self.cfg
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.idx = proprio_index(spec)
        A = spec.action_dim
        d = c.features + len(self.idx)
        self.encoder = ImageEncoder(spec.images[0], features=c.features)
        self.proprio_norm = ObsNormalizer(len(self.idx))
        self.critic = EnsembleCritic(d, A, c.hidden, n_critics=2)
        self.actor = SquashedGaussianActor(d, A, c.hidden)
        self.encoder_targ = copy.deepcopy(self.encoder).requires_grad_(False)
        self.critic_targ = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(float(np.log(c.init_alpha)), requires_grad=True)
        self.target_entropy = -float(A) if c.target_entropy is None else float(c.target_entropy)
        self.critic_opt = torch.optim.Adam([*self.encoder.parameters(), *self.critic.parameters()], lr=c.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.lr)
        self.updates = 0

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def _h(self, encoder: nn.Module, img: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(img), self.proprio_norm(obs.index_select(1, self.idx))], -1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, image: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One action for a raw ``obs`` vector and a ``(3, H, W)`` uint8 frame."""
        h = self._h(self.encoder, torch.as_tensor(image)[None], torch.as_tensor(obs, dtype=torch.float32)[None])
        a, _ = self.actor(h, deterministic=deterministic, with_log_prob=False, generator=self.gen)
        return a[0].numpy()

    def update(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        """One DrQ update on a batch: ``img``, ``obs``, ``action``, ``reward``, ``next_img``, ``next_obs``,
        ``terminated`` (float)."""
        c = self.cfg
        img = random_shift(b["img"], c.pad, self.gen)
        nimg = random_shift(b["next_img"], c.pad, self.gen)
        with torch.no_grad():
            h_next = self._h(self.encoder, nimg, b["next_obs"])
            a2, logp2 = self.actor(h_next, generator=self.gen)
            q_next = self.critic_targ(self._h(self.encoder_targ, nimg, b["next_obs"]), a2).min(0).values
            y = b["reward"] + c.gamma * (1.0 - b["terminated"]) * (q_next - self.alpha * logp2)
        h = self._h(self.encoder, img, b["obs"])
        q = self.critic(h, b["action"])
        critic_loss = 0.5 * (q - y).square().mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        hd = h.detach()
        a, logp = self.actor(hd, generator=self.gen)
        actor_loss = (self.alpha.detach() * logp - self.critic(hd, a).min(0).values).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))  # the critic's weights are not the actor's to move
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for targ, src, tau in ((self.critic_targ, self.critic, c.tau), (self.encoder_targ, self.encoder,
                                                                            c.encoder_tau)):
                torch._foreach_lerp_(list(targ.parameters()), list(src.parameters()), tau)
        self.updates += 1
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "alpha": self.alpha.item(),
                "q": q.mean().item()}

    def policy_module(self) -> PixelPolicy:
        return PixelPolicy(self).eval()


class FrameReplay:
    """Transitions with their frames, uint8, preallocated for ``capacity`` (FIFO beyond it)."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, shape: tuple[int, int, int]) -> None:
        self.cap, self.n, self.i = int(capacity), 0, 0
        self.img = np.zeros((self.cap, *shape), np.uint8)
        self.next_img = np.zeros((self.cap, *shape), np.uint8)
        self.obs = np.zeros((self.cap, obs_dim), np.float32)
        self.next_obs = np.zeros((self.cap, obs_dim), np.float32)
        self.action = np.zeros((self.cap, action_dim), np.float32)
        self.reward = np.zeros(self.cap, np.float32)
        self.terminated = np.zeros(self.cap, np.float32)

    def add(self, img, obs, action, reward, next_img, next_obs, terminated) -> None:
        k = self.i
        self.img[k], self.obs[k], self.action[k], self.reward[k] = img, obs, action, reward
        self.next_img[k], self.next_obs[k], self.terminated[k] = next_img, next_obs, float(terminated)
        self.i = (k + 1) % self.cap
        self.n = min(self.n + 1, self.cap)

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        j = rng.integers(0, self.n, batch)
        return {k: torch.as_tensor(getattr(self, k)[j]) for k in
                ("img", "obs", "action", "reward", "next_img", "next_obs", "terminated")}


def pixel_spec(spec: Spec, size: int = 64, name: str = "front") -> Spec:
    """``spec`` with the twin camera as its one image input (``size`` x ``size``, the twin's ``/camera/image_raw``)."""
    return spec.replace(images=(ImageSpec(name=name, topic="/camera/image_raw", height=size, width=size),))


def train_pixel_sac(task: str, steps: int, *, seed: int = 0, cfg: DrQConfig | None = None, learning_starts: int = 1000,
                    size: int = 64, eval_every: int = 0, eval_episodes: int = 20, progress: bool = False,
                    log=None, arm=None) -> tuple[PixelSAC, list[tuple[int, float]]]:
    """Train from scratch in the gym twin of ``task`` from the twin camera's frames and the proprioception:
    ``learning_starts`` random steps, then one update per env step. ``eval_every`` > 0: the deterministic
    policy's success on ``eval_episodes`` seeded episodes (seeds 10000..) every that many steps. Returns the agent
    and the ``(step, success)`` curve."""
    from tqdm import tqdm

    from ..arm import Arm

    arm = (arm or Arm(Spec(task=task))).with_task(task)
    spec = pixel_spec(arm.spec, size)
    env = arm.twin().env(task)
    agent = PixelSAC(spec, cfg, seed)
    c = agent.cfg
    rng = np.random.default_rng(seed)
    rb = FrameReplay(steps, spec.obs_dim, spec.action_dim, (3, size, size))
    curve: list[tuple[int, float]] = []

    def frame() -> np.ndarray:
        return np.ascontiguousarray(env.twin.render(size, size).transpose(2, 0, 1))

    try:
        obs, _ = env.reset(seed=seed * 100_000)
        img = frame()
        ep = 0
        fitted = False
        for t in tqdm(range(steps), desc="pixel SAC", disable=not progress, unit="step"):
            if t < learning_starts:
                a = rng.uniform(-1, 1, spec.action_dim).astype(np.float32)
            else:
                if not fitted:  # the proprioception's normaliser, once, from the random phase
                    agent.proprio_norm.fit(rb.obs[: rb.n, agent.idx.numpy()])
                    fitted = True
                a = agent.act(obs, img)
            obs2, r, term, trunc, _ = env.step(a)
            img2 = frame()
            rb.add(img, obs, a, r, img2, obs2, term)
            obs, img = obs2, img2
            if term or trunc:
                ep += 1
                obs, _ = env.reset(seed=seed * 100_000 + ep)
                img = frame()
            if t >= learning_starts:
                m = agent.update(rb.sample(c.batch_size, rng))
                if log is not None and t % 1000 == 0:
                    log(t, m)
            if eval_every and (t + 1) % eval_every == 0:
                curve.append((t + 1, evaluate_pixel(agent, env, eval_episodes, size)))
                obs, _ = env.reset(seed=seed * 100_000 + ep + 1_000_000)
                img = frame()
    finally:
        env.close()
    return agent, curve


def evaluate_pixel(agent: PixelSAC, env, episodes: int, size: int = 64, seed: int = 10_000) -> float:
    """Success of the deterministic policy on ``episodes`` seeded episodes of ``env`` (frames from its camera)."""
    wins = 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, info = False, {"is_success": False}
        while not done:
            img = np.ascontiguousarray(env.twin.render(size, size).transpose(2, 0, 1))
            obs, _, term, trunc, info = env.step(agent.act(obs, img, deterministic=True))
            done = term or trunc
        wins += bool(info["is_success"])
    return wins / episodes


