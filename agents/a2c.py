"""A2C on RankListHash-v0 (or SequentialHashBits-v0), as third-party RL code would train it (SB3).

The same setup as ``agents.ppo`` (the env unchanged, ``MlpPolicy`` emitting a ``MultiBinary`` code,
one bank per env copy), with stable-baselines3's synchronous advantage actor-critic instead of PPO:
one gradient step per rollout of ``num_envs x n_steps`` codes, no clipping, no minibatch epochs.

Run: ``python -m agents.train a2c [--bits 16] [--epochs 150] [--out DIR]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stable_baselines3 import A2C

import hashing_gym  # noqa: F401 - registers the environments
from agents.checkpoint import read_sb3
from agents.common import CommonArgs, load_sb3_checkpoint, resolve_device
from agents.ppo import ENV_ID, SEQUENTIAL_ID, encode_split, train_multibinary

ALGO = "a2c"
MODEL_FILE = "model.zip"

__all__ = ["Args", "encode_split", "load_model", "main"]


@dataclass
class Args(CommonArgs):
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
    learning_rate: float = field(default=3e-3, metadata={"help": "RMSprop learning rate"})
    num_envs: int = field(
        default=8, metadata={"help": "environment copies (DummyVecEnv), each with its own bank"}
    )
    n_steps: int = field(default=32, metadata={"help": "steps per env copy per update"})
    ent_coef: float = field(default=0.0, metadata={"help": "entropy bonus coefficient"})
    hidden: str = field(
        default="256", metadata={"help": "policy and value hidden layer sizes, comma-separated"}
    )
    checkpoint_every: int = field(default=50_000, metadata={"help": "steps between checkpoints for --resume"})
    eval_every: int = field(
        default=50_000, metadata={"help": "steps between retrieval evaluations (0: never)"}
    )


def make_model(args: Args, env: Any, folder: Path, hidden: list[int]) -> A2C:
    """A new A2C, or the newest checkpoint of ``folder`` when resuming."""
    device = resolve_device(args.device)
    if args.resume:
        return load_sb3_checkpoint(A2C, folder, env, device, ALGO)
    return A2C(
        "MultiInputPolicy" if args.env == SEQUENTIAL_ID else "MlpPolicy",
        env,
        learning_rate=args.learning_rate,
        n_steps=args.n_steps,
        ent_coef=args.ent_coef,
        policy_kwargs={"net_arch": hidden},
        tensorboard_log=str(folder / "tb"),
        device=device,
        seed=args.seed,
        verbose=0,
    )


def main(args: Args) -> dict[str, Any]:
    """Train A2C, encode, evaluate; write model.zip and results.json into the run folder."""
    return train_multibinary(args, ALGO, make_model)


def load_model(folder: Path, device: str = "auto") -> A2C:
    """The trained model of a run folder."""
    return read_sb3(Path(folder) / MODEL_FILE, A2C, device=resolve_device(device))
