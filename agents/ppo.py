"""PPO on RankListHash-v0 (or SequentialHashBits-v0), as third-party RL code would train it (SB3).

The env is used unchanged: ``MlpPolicy`` sees an item's features and emits its whole code as a
``MultiBinary(bits)`` action (independent Bernoulli bits); the reward is the code's average
precision against the env's database codes. Each of the ``--num-envs`` copies keeps its own
bank (``database="bank"``: the last code acted for each item, random at start), so no callback
hands database codes around; with one-step episodes PPO's advantage is the reward minus the value
of the item. Encoding is ``model.predict(features, deterministic=True)`` (bit = 1 where p > 0.5).

The ``--num-envs`` copies step as one batch (``hashing_gym.sb3.make_vec_env``: SB3's ``VecEnv``
over the batched env; copy i follows the trajectory that ``DummyVecEnv``'s env i would). A resumed
run (``--resume DIR``) continues exactly from the last checkpoint (``agents.sb3_state``), banks included.

Run: ``python -m agents.train ppo [--bits 16] [--epochs 150] [--out DIR]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3 import PPO

import hashing_gym  # noqa: F401 - registers the environments
from agents.common import (
    SB3_MODEL_FILE,
    CommonArgs,
    UsageError,
    check_common_args,
    check_group,
    load_run_dataset,
    load_sb3_model,
    open_run,
    parse_hidden,
    releases_run_lock,
    resolve_device,
    set_threads,
    train_sb3,
)
from hashing_gym.data import HashingDataset
from hashing_gym.envs import encode_sequential
from hashing_gym.sb3 import make_vec_env

ALGO = "ppo"
ENV_ID = "RankListHash-v0"
# SequentialHashBits-v0 works too: a feed-forward policy, since its observation holds the code so far.
SEQUENTIAL_ID = "SequentialHashBits-v0"
MODEL_FILE = SB3_MODEL_FILE
MODEL_CLASS = PPO  # the SB3 class of this trainer's models (agents.convert reads old zips with it)


@dataclass
class Args(CommonArgs):
    """PPO hyperparameters (SB3 PPO with MlpPolicy on RankListHash-v0's bank mode).

    Training stops after whole rollouts, so ``env_steps`` is the budget rounded up to a multiple
    of ``num_envs x n_steps``.
    """

    env: str = field(default=ENV_ID, metadata={"help": f"environment id: {ENV_ID} or {SEQUENTIAL_ID}"})
    group: int = field(default=4, metadata={"help": f"bits decided per step on {SEQUENTIAL_ID}"})
    epochs: float = field(
        default=150.0,
        metadata={"help": "default budget: timesteps = epochs x train items (one step = one code)"},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    num_envs: int = field(
        default=8,
        metadata={"help": "env copies, each with its own bank, stepped as one batch (hashing_gym.sb3)"},
    )
    n_steps: int = field(default=256, metadata={"help": "steps per env copy per rollout"})
    batch_size: int = field(default=512, metadata={"help": "minibatch size"})
    n_epochs: int = field(default=4, metadata={"help": "passes over each rollout"})
    ent_coef: float = field(default=0.0, metadata={"help": "entropy bonus coefficient"})
    clip_range: float = field(default=0.2, metadata={"help": "PPO clip range"})
    hidden: str = field(
        default="256", metadata={"help": "policy and value hidden layer sizes, comma-separated"}
    )
    checkpoint_every: int = field(default=50_000, metadata={"help": "steps between checkpoints for --resume"})
    eval_every: int = field(
        default=50_000, metadata={"help": "steps between retrieval evaluations (0: never)"}
    )


def encode_split(model: PPO, features: np.ndarray, bits: int) -> np.ndarray:
    """Deterministic codes of items (bit = 1 where p > 0.5); uint8 (n, bits)."""
    if isinstance(model.observation_space, spaces.Dict):  # SequentialHashBits-v0: T steps per item
        return encode_sequential(
            lambda obs, state: (model.predict(obs, deterministic=True)[0], None),
            features,
            bits,
            int(model.action_space.n),
        )
    codes = model.predict(np.asarray(features, dtype=np.float32), deterministic=True)[0]
    codes = np.asarray(codes, dtype=np.uint8).reshape(len(features), -1)
    if codes.shape[1] != bits:
        raise ValueError(f"the model encodes {codes.shape[1]} bits, asked for {bits}")
    return codes


def default_timesteps(args: Args, dataset: HashingDataset) -> int:
    """Budget that scales with the data: ``epochs`` codes per train item (T steps each when sequential)."""
    steps_per_code = args.bits // args.group if args.env == SEQUENTIAL_ID else 1
    return max(1, math.ceil(args.epochs * dataset.train.n * steps_per_code))


def check_args(args: Any, algo: str = ALGO) -> list[int]:
    """Refuse bad arguments of ``algo`` (ppo or a2c) with a one-line message; return the hidden sizes."""
    if args.env not in (ENV_ID, SEQUENTIAL_ID):
        raise UsageError(
            f"{algo} trains {ENV_ID} or {SEQUENTIAL_ID} (MultiBinary actions), got --env {args.env}"
        )
    if args.env == SEQUENTIAL_ID:
        check_group(args)
    counts = ("num_envs", "n_steps", "batch_size", "n_epochs", "checkpoint_every", "epochs")
    # a2c has no batch_size nor n_epochs
    check_common_args(args, positive=[name for name in counts if hasattr(args, name)])
    return parse_hidden(args.hidden)


def make_model(args: Args, env: Any, folder: Path, hidden: list[int]) -> PPO:
    """A new PPO on ``env``, as a fresh run builds it (``--resume`` then gives it its checkpoint)."""
    device = resolve_device(args.device)
    return PPO(
        "MultiInputPolicy" if args.env == SEQUENTIAL_ID else "MlpPolicy",
        env,
        learning_rate=args.learning_rate,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        ent_coef=args.ent_coef,
        clip_range=args.clip_range,
        policy_kwargs={"net_arch": hidden},
        tensorboard_log=str(folder / "tb"),
        device=device,
        seed=args.seed,
        verbose=0,
    )


@releases_run_lock
def train_multibinary(
    args: Any, algo: str, make_model: Callable[[Any, Any, Path, list[int]], Any]
) -> dict[str, Any]:
    """Train an SB3 on-policy model (``make_model``) on a MultiBinary env; write the run folder.

    Shared by ``ppo`` and ``a2c``: the same env setup, budget, checkpoints and results.json.
    """
    hidden = check_args(args, algo)
    set_threads(args.threads)
    dataset = load_run_dataset(args)
    folder = open_run(args, algo)
    timesteps = args.timesteps if args.timesteps is not None else default_timesteps(args, dataset)

    # ENV SETUP: the unchanged env on the train split, default bank mode, one bank per copy; the
    # copies step as one batch (SB3's VecEnv semantics; copy i draws as DummyVecEnv's env i would).
    env_kwargs: dict[str, Any] = {"dataset": dataset, "bits": args.bits}
    if args.env == SEQUENTIAL_ID:
        env_kwargs["group"] = args.group
    env = make_vec_env(args.env, n_envs=args.num_envs, seed=args.seed, **env_kwargs)

    # ALGO LOGIC: the SB3 model; MlpPolicy (MultiInputPolicy on SequentialHashBits) over MultiBinary.
    model = make_model(args, env, folder, hidden)
    results = train_sb3(model, algo, args, folder, dataset, timesteps, encode_split)
    env.close()
    return results


def main(args: Args) -> dict[str, Any]:
    """Train PPO, encode, evaluate; write model.pt and results.json into the run folder."""
    return train_multibinary(args, ALGO, make_model)


def load_model(folder: Path, device: str = "auto") -> PPO:
    """The trained model of a run folder: built from its args.json, given the parameters of model.pt."""
    return load_sb3_model(
        folder, ALGO, Args, lambda args, env: make_model(args, env, Path(folder), check_args(args)), device
    )


def make_env(dataset: HashingDataset, bits: int, env_id: str = ENV_ID) -> gym.Env:
    """The training environment of a run, for inspection or further training."""
    return gym.make(env_id, dataset=dataset, bits=bits)
