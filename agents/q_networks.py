r"""Q-networks of guided DQN on BinaryCodeTravel-v0, shared by ``agents.dqn`` (SB3) and ``agents.dqn_torch``.

Two heads over the observation :math:`s = (f, e, h)` (features, code, flip history):

- ``"mlp"``: one MLP from the concatenated observation to the :math:`b + 1` Q-values, as a plain
  DQN (and, as far as the paper says, DRLH's) would use.
- ``"bit-flip"`` (the default; ours): the flip symmetry of the action space built into the head,

  .. math::
      Q(s, \text{flip } k) = (1 - 2 e_k)\, u_k(f) + v_k(s), \qquad Q(s, \text{terminate}) = v_b(s),

  with :math:`u = \mathrm{MLP}(f)` a score per bit from the features alone and
  :math:`v = \mathrm{MLP}(f, e, h)`. Flipping bit :math:`k` from 0 and from 1 are opposite moves,
  and whether a flip brings the code toward the item's class codeword depends on the item (its
  features) and on the bit's current value only through that sign; the head states that instead of
  leaving the network to discover it from the concatenated input. On digits at 16 bits it took a
  guided DQN from mAP 0.57 (``"mlp"``) to 0.97 at the same budget (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.dqn.policies import MultiInputPolicy
from stable_baselines3.dqn.policies import QNetwork as SB3QNetwork
from torch import nn

HEADS: tuple[str, ...] = ("bit-flip", "mlp")


def mlp(sizes: list[int], activate_last: bool = False) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ReLU between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(size_in, size_out))
        if activate_last or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """Q-values (n, bits + 1) of BinaryCodeTravel-v0 observations (see the module docstring for ``head``).

    Args:
        feature_dim: dimension D of the features.
        bits: code length b.
        history: number of past flips in the observation.
        hidden: hidden layer sizes of each MLP.
        head: ``"bit-flip"`` or ``"mlp"``.
    """

    def __init__(
        self, feature_dim: int, bits: int, history: int, hidden: list[int], head: str = "bit-flip"
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.config: dict[str, Any] = {
            "feature_dim": feature_dim, "bits": bits, "history": history, "hidden": list(hidden), "head": head
        }  # fmt: skip
        self.bits = bits
        self.net = mlp([feature_dim + bits * (1 + history), *hidden, bits + 1])
        self.bit_scores = mlp([feature_dim, *hidden, bits]) if head == "bit-flip" else None

    def forward(self, features: torch.Tensor, code: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Q-values (n, bits + 1) of n observations (code and history as 0/1 of any dtype)."""
        code = code.to(features.dtype)
        q = self.net(torch.cat([features, code, history.flatten(1).to(features.dtype)], dim=1))
        if self.bit_scores is None:
            return q
        flips = (1 - 2 * code) * self.bit_scores(features) + q[:, : self.bits]
        return torch.cat([flips, q[:, self.bits :]], dim=1)


class _SB3QNetwork(SB3QNetwork):
    """SB3's Q-network interface over :class:`QNetwork`: reads the Dict observation's parts itself.

    SB3's ``CombinedExtractor`` would hand the head one flat vector; the bit-flip head needs the code
    and the features apart, so ``forward`` takes them from the observation dict (the extractor is
    kept, as SB3's save/load expect one, but unused: it flattens and has no weights).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        features_extractor: Any,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        head: str = "bit-flip",
    ) -> None:
        BasePolicy.__init__(
            self,
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.net_arch = list(net_arch or [256, 256])
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.head = head
        parts = observation_space.spaces
        feature_dim, bits, history = parts["features"].shape[0], parts["code"].n, parts["history"].shape[0]
        self.q = QNetwork(int(feature_dim), int(bits), int(history), self.net_arch, head)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.q(obs["features"].float(), obs["code"], obs["history"])

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "head": self.head}


class GuidedDQNPolicy(MultiInputPolicy):
    """SB3's ``MultiInputPolicy`` for DQN with :class:`QNetwork` as its online and target networks.

    Args:
        head: ``"bit-flip"`` or ``"mlp"`` (``policy_kwargs={"head": ...}``); the other arguments are SB3's.
    """

    def __init__(self, *args: Any, head: str = "bit-flip", **kwargs: Any) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head = head
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> _SB3QNetwork:  # noqa: D102 - SB3's DQNPolicy.make_q_net
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return _SB3QNetwork(**net_args, head=self.head).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "head": self.head}
