"""A per-object, shared-weight feature extractor for symbolic PPO on TVR (Stable-Baselines3).

The symbolic observations (:func:`tvr_gym.envs.wrappers.encode_states`,
:func:`tvr_gym.envs.interactive_sb3.symbolic_observation`) are two object tables,
``[first state | second state]`` with ``FEATURES_PER_OBJECT`` numbers per object, then,
for ``TVR-Interactive-v0``, the fraction of the turn limit used. A flat ``MlpPolicy`` must learn
the same comparison ten times, once per object slot. :class:`ObjectTableExtractor` learns it once:

1. each object ``i`` is read as ``[a_i, b_i, b_i - a_i]`` (its row in both tables and their difference,
   computed inside the network from the two whole tables) by one MLP shared by all objects, giving ``h_i``;
2. a shared linear score ``s_i = w · h_i`` says how much object ``i`` calls for a transformation;
3. the features are the ten scores, the score-weighted mean of the ``h_i`` (what the chosen object
   needs), their max, and any trailing numbers of the observation (the turn fraction).

With ``net_arch=dict(pi=[], vf=[...])`` (:data:`POLICY_KWARGS`), SB3's linear action head reads the object
logits off the scores and the pair logits off the pooled features, so the object choice is the same
function for every slot.

:class:`ObjectGlimpseExtractor` does the same from pixels (the ``image-table`` observation of
:class:`tvr_gym.envs.wrappers.ImageTableObservation`): one small CNN turns each image into a feature map, and
both maps (with the raw colours) are sampled at each object's 25 glimpse points (its initial place and
every place one move away). Object ``i``'s row is its initial table row and, per point, the initial
sample, the final sample and their difference, as the symbolic extractor reads ``[a_i, b_i, b_i - a_i]``.
The final state is seen only through the pixels. The explicit difference is what let PPO learn: with
one CNN over the six stacked channels and no difference, the ObjAcc of the training episodes stayed at
chance for 55k steps (four settings tried); with it, it left chance after about 25k
(``benchmarks/results/learning.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS
from tvr_gym.envs.wrappers import FEATURES_PER_OBJECT, GLIMPSE_OFFSETS

__all__ = [
    "GLIMPSE_POLICY_KWARGS", "OBJECT_ACTION_POLICY_KWARGS", "POLICY_KWARGS", "ObjectActionExtractor",
    "ObjectActionHead", "ObjectActionPolicy", "ObjectGlimpseExtractor", "ObjectTableExtractor", "policy_kwargs",
]  # fmt: skip


def pool_objects(hidden: torch.Tensor, score: nn.Linear, extra: torch.Tensor) -> torch.Tensor:
    """``[scores, score-weighted mean, max, extra]`` of per-object features ``hidden`` (B, N, H)."""
    scores = score(hidden).squeeze(-1)  # (B, N)
    weights = torch.softmax(scores, dim=-1).unsqueeze(-1)
    pooled = (weights * hidden).sum(dim=1)
    strongest = hidden.max(dim=1).values
    return torch.cat([scores, pooled, strongest, extra], dim=-1)


class ObjectTableExtractor(BaseFeaturesExtractor):
    """Shared-weight per-object features of two object tables (see the module docstring).

    ``hidden`` is the width of the per-object MLP (two layers). The observation must hold
    ``2 * n_objects * FEATURES_PER_OBJECT`` table entries, optionally followed by a few extra numbers.
    """

    def __init__(self, observation_space: spaces.Box, hidden: int = 128) -> None:
        n, f = SPEC.n_objects, FEATURES_PER_OBJECT
        size = int(observation_space.shape[0])
        self.table_size = 2 * n * f
        if size < self.table_size:
            raise ValueError(f"observation_space: {size} numbers, fewer than two object tables ({self.table_size})")
        self.n_objects, self.n_features, self.n_extra = n, f, size - self.table_size
        super().__init__(observation_space, features_dim=n + 2 * hidden + self.n_extra)
        self.object_net = nn.Sequential(nn.Linear(3 * f, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.score = nn.Linear(hidden, 1)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        batch = observations.shape[0]
        tables = observations[:, : self.table_size].reshape(batch, 2, self.n_objects, self.n_features)
        first, second = tables[:, 0], tables[:, 1]
        hidden = self.object_net(torch.cat([first, second, second - first], dim=-1))  # (B, N, H)
        return pool_objects(hidden, self.score, observations[:, self.table_size :])


class ObjectGlimpseExtractor(BaseFeaturesExtractor):
    """Per-object features of the ``image-table`` observation, sampled from a CNN feature map (module docstring).

    ``observation_space`` is the Dict of :class:`~tvr_gym.envs.wrappers.ImageTableObservation` as SB3 hands it
    over (images channel-first and scaled to [0, 1] by SB3's preprocessing). The CNN, shared by both
    images, has three 3x3 layers of ``channels`` maps, the first with stride 2; ``hidden`` is the
    per-object MLP's width.
    """

    def __init__(self, observation_space: spaces.Dict, hidden: int = 128, channels: int = 16) -> None:
        n, f, g = SPEC.n_objects, FEATURES_PER_OBJECT, len(GLIMPSE_OFFSETS)
        expected = {"images": 3, "table": 1, "points": 1}
        shapes = {k: tuple(getattr(observation_space.spaces.get(k), "shape", ()) or ()) for k in expected}
        if any(len(shapes[k]) != rank for k, rank in expected.items()) or shapes["images"][0] != 6:
            raise ValueError(
                f"observation_space: expected the image-table Dict (images (6, H, W), table, points), got {shapes}"
            )
        if shapes["table"] != (n * f,) or shapes["points"] != (n * g * 2,):
            raise ValueError(
                f"observation_space: table {shapes['table']} / points {shapes['points']} do not hold {n} objects"
            )
        super().__init__(observation_space, features_dim=n + 2 * hidden)
        self.n_objects, self.n_features, self.n_points = n, f, g
        self.cnn = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.object_net = nn.Sequential(
            nn.Linear(f + 3 * g * (channels + 3), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.score = nn.Linear(hidden, 1)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        images = observations["images"].float()
        batch, n, g = images.shape[0], self.n_objects, self.n_points
        first, second = images[:, :3], images[:, 3:]
        maps = self.cnn(torch.cat([first, second]))  # one CNN for both images: (2B, C, h, w)
        points = observations["points"].reshape(batch, n, g, 2)
        # per image, the learned features and the raw colours at every point (zeros outside the image)
        a, b = (
            torch.cat([nn.functional.grid_sample(x, points, align_corners=False) for x in (m, rgb)], 1)
            for m, rgb in ((maps[:batch], first), (maps[batch:], second))
        )
        glimpses = torch.cat([a, b, b - a], 1).permute(0, 2, 3, 1).reshape(batch, n, -1)  # (B, N, G * 3(C + 3))
        table = observations["table"].reshape(batch, n, self.n_features)
        hidden = self.object_net(torch.cat([table, glimpses], dim=-1))
        return pool_objects(hidden, self.score, maps.new_zeros(batch, 0))


POLICY_KWARGS: dict[str, Any] = {
    "features_extractor_class": ObjectTableExtractor,
    "features_extractor_kwargs": {"hidden": 128},
    "net_arch": {"pi": [], "vf": [64]},
    "ortho_init": False,
}
"""The symbolic policy's keywords: the extractor, a linear action head, a small value head. SB3's
orthogonal initialisation is off: its 0.01 gain on the action head slows the extractor's start (full
TVR-Basic, one seed each: held-out ObjAcc 0.11 with it and 0.77 without after 20k steps; 0.81 with it
after 60k)."""


GLIMPSE_POLICY_KWARGS: dict[str, Any] = {
    **POLICY_KWARGS,
    "features_extractor_class": ObjectGlimpseExtractor,
    "features_extractor_kwargs": {"hidden": 128, "channels": 16},
}
"""The ``image-table`` policy's keywords (SB3's ``MultiInputPolicy``): the glimpse extractor, the same heads."""


def policy_kwargs(hidden: int = 128) -> dict[str, Any]:
    """:data:`POLICY_KWARGS` with another per-object width."""
    return {**POLICY_KWARGS, "features_extractor_kwargs": {"hidden": hidden}}


# ------------------------------------------------------------ interactive: one action per (object, pair)


class ObjectActionExtractor(ObjectTableExtractor):
    """:class:`ObjectTableExtractor` for ``TVR-Interactive-v0``'s ``Discrete(objects × pairs + 1)`` action: besides the
    pooled features it gives each object's logits over the (attribute, value) pairs, from one head shared
    by every object, so what the policy learns of one object holds for all ten.

    Features: ``[object logits (N * P) | scores, pooled, max, extra]``; :class:`ObjectActionPolicy` reads the
    first part as the step logits and the rest for ``done`` and the value.
    """

    def __init__(self, observation_space: spaces.Box, hidden: int = 128, n_pairs: int = 1) -> None:
        super().__init__(observation_space, hidden)
        self.n_pairs = n_pairs
        self.pair_head = nn.Linear(hidden, n_pairs)
        self._features_dim = self.n_objects * n_pairs + self._features_dim

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        batch = observations.shape[0]
        tables = observations[:, : self.table_size].reshape(batch, 2, self.n_objects, self.n_features)
        first, second = tables[:, 0], tables[:, 1]
        hidden = self.object_net(torch.cat([first, second, second - first], dim=-1))  # (B, N, H)
        logits = self.pair_head(hidden).reshape(batch, -1)  # (B, N * P): object-major, as the actions
        return torch.cat([logits, pool_objects(hidden, self.score, observations[:, self.table_size :])], dim=-1)


class ObjectActionHead(nn.Module):
    """The step logits read off the features as they are, and ``done``'s from the pooled part."""

    def __init__(self, n_steps: int, pooled: int) -> None:
        super().__init__()
        self.n_steps = n_steps
        self.done = nn.Linear(pooled, 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.cat([latent[:, : self.n_steps], self.done(latent[:, self.n_steps :])], dim=-1)


class ObjectActionPolicy(MaskableActorCriticPolicy):
    """sb3-contrib's ``MaskableActorCriticPolicy`` with :class:`ObjectActionHead` as its action head: needs
    :class:`ObjectActionExtractor` (:data:`OBJECT_ACTION_POLICY_KWARGS`)."""

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        extractor = self.features_extractor
        n_steps = extractor.n_objects * extractor.n_pairs
        self.action_net = ObjectActionHead(n_steps, extractor.features_dim - n_steps)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)


OBJECT_ACTION_POLICY_KWARGS: dict[str, Any] = {
    "features_extractor_class": ObjectActionExtractor,
    "features_extractor_kwargs": {"hidden": 128, "n_pairs": len(PAIRS)},
    "net_arch": {"pi": [], "vf": [64]},
    "ortho_init": False,
}
"""The interactive policy's keywords: per-object step logits from a shared head, a small value head."""
