"""A2C on RankListHash-v0 (or SequentialHashBits-v0), as third-party RL code would train it (SB3).

The same setup as ``agents.ppo`` (``MlpPolicy`` emitting a ``MultiBinary`` code, ReLU networks with
PyTorch's initialisation, every copy's database re-encoded by the deterministic policy every
``--db-refresh`` steps, the learning rate annealed to 0: our defaults, which ``agents.ppo``
explains), with stable-baselines3's synchronous advantage actor-critic instead of PPO: one gradient
step per rollout of ``num_envs x n_steps`` codes, no clipping, no minibatch epochs. RMSprop at 1e-3
(3e-3 before the refresh: with a database that follows the policy, 3e-3 stalls near mAP 0.6 on 9,782
items at 32 bits).

Run: ``python -m agents.train a2c [--bits 16] [--epochs 150] [--out DIR]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stable_baselines3 import A2C

import hashing_gym  # noqa: F401 - registers the environments
from agents.common import SB3_MODEL_FILE, CommonArgs, load_sb3_model, resolve_device
from agents.ppo import (
    ENV_ID,
    SEQUENTIAL_ID,
    PolicyArgs,
    as_recorded,
    check_args,
    encode_split,
    learning_rate,
    policy_kwargs,
    train_multibinary,
)

ALGO = "a2c"
MODEL_FILE = SB3_MODEL_FILE
MODEL_CLASS = A2C  # the SB3 class of this trainer's models (agents.convert reads old zips with it)

__all__ = ["Args", "encode_split", "load_model", "main"]


@dataclass
class Args(PolicyArgs, CommonArgs):
    """A2C hyperparameters (SB3 A2C with MlpPolicy on RankListHash-v0's bank mode).

    Training stops after whole rollouts, so ``env_steps`` is the budget rounded up to a multiple
    of ``num_envs x n_steps``.
    """

    env: str = field(default=ENV_ID, metadata={"help": f"environment id: {ENV_ID} or {SEQUENTIAL_ID}"})
    group: int = field(default=4, metadata={"help": f"bits decided per step on {SEQUENTIAL_ID}"})
    epochs: float = field(
        default=150.0,
        metadata={"help": "default budget: timesteps = epochs x train items (one step = one code)"},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "RMSprop learning rate"})
    num_envs: int = field(
        default=8,
        metadata={"help": "env copies, each with its own bank, stepped as one batch (hashing_gym.sb3)"},
    )
    n_steps: int = field(default=64, metadata={"help": "steps per env copy per update"})
    ent_coef: float = field(default=0.0, metadata={"help": "entropy bonus coefficient"})
    hidden: str = field(
        default="256", metadata={"help": "policy and value hidden layer sizes, comma-separated"}
    )
    checkpoint_every: int = field(default=50_000, metadata={"help": "steps between checkpoints for --resume"})
    eval_every: int = field(
        default=50_000, metadata={"help": "steps between retrieval evaluations (0: never)"}
    )


def make_model(args: Args, env: Any, folder: Path, hidden: list[int]) -> A2C:
    """A new A2C on ``env``, as a fresh run builds it (``--resume`` then gives it its checkpoint)."""
    device = resolve_device(args.device)
    return A2C(
        "MultiInputPolicy" if args.env == SEQUENTIAL_ID else "MlpPolicy",
        env,
        learning_rate=learning_rate(args),
        n_steps=args.n_steps,
        ent_coef=args.ent_coef,
        policy_kwargs=policy_kwargs(args, hidden),
        tensorboard_log=str(folder / "tb"),
        device=device,
        seed=args.seed,
        verbose=0,
    )


def main(args: Args) -> dict[str, Any]:
    """Train A2C, encode, evaluate; write model.pt and results.json into the run folder."""
    return train_multibinary(args, ALGO, make_model)


def load_model(folder: Path, device: str = "auto") -> A2C:
    """The trained model of a run folder: built from its args.json, given the parameters of model.pt."""

    def build(args: Args, env: Any) -> A2C:
        args = as_recorded(args, folder)
        return make_model(args, env, Path(folder), check_args(args, ALGO))

    return load_sb3_model(folder, ALGO, Args, build, device)
