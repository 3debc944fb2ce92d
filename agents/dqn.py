"""Guided DQN on BinaryCodeTravel-v0 in stable-baselines3: ``python -m agents.train dqn-sb3``.

For users of stable-baselines3: the DQN of ``agents.dqn_torch`` (which ``python -m agents.train
dqn`` runs; its docstring says what follows DRLH and what is ours) as an SB3 ``DQN`` subclass.
Exploratory actions are the teacher's (the env's ``expert_action``) with probability epsilon,
which decays linearly from 1.0 to 0.1 over the first 60% of training and stays at 0.1; the replay
buffer stores the actions actually executed, so Q-learning learns off-policy from the teacher's
demonstrations and its own greedy moves. The Q-network is ``agents.q_networks.QNetwork`` (the
bit-flip head by default) through ``GuidedDQNPolicy``. SB3's DQN has no Double DQN and no
teacher margin loss, so this trainer needs a larger budget than ``dqn`` for the same mAP.

After training, the greedy policy encodes the query and database splits from random start codes
in at most ``bits`` steps (DRLH's test phase, ``hashing_gym.envs.encode_batch``), and Hamming
ranking gives the results.

Run: ``python -m agents.train dqn-sb3 [--bits 16] [--timesteps N] [--out DIR]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import DQN
from stable_baselines3.common.vec_env import VecEnv

import hashing_gym  # noqa: F401 - registers the environments
from agents.common import (
    SB3_MODEL_FILE,
    CommonArgs,
    UsageError,
    check_common_args,
    load_run_dataset,
    load_sb3_model,
    open_run,
    parse_hidden,
    releases_run_lock,
    resolve_device,
    set_threads,
    train_sb3,
)
from agents.q_networks import HEADS, GuidedDQNPolicy
from hashing_gym.data import HashingDataset
from hashing_gym.envs import encode_batch
from hashing_gym.sb3 import HashingVecEnv, make_vec_env

ALGO = "dqn-sb3"
MODEL_FILE = SB3_MODEL_FILE


@dataclass
class Args(CommonArgs):
    """DQN hyperparameters (defaults: DRLH's schedule; reach mAP >= 0.95 on digits at 16 bits)."""

    steps_per_item: int | None = field(
        default=None,
        metadata={
            "help": "default budget: timesteps = steps_per_item x train items; default 12.5 x bits (200 at "
            "16 bits): an episode lasts up to bits + 1 steps, so every length gets as many episodes per item"
        },
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Adam learning rate"})
    buffer_size: int = field(default=100_000, metadata={"help": "replay buffer transitions"})
    learning_starts: int = field(default=2_000, metadata={"help": "teacher steps before the first update"})
    batch_size: int = field(default=128, metadata={"help": "replay minibatch size"})
    gamma: float = field(default=0.95, metadata={"help": "discount: each step costs the agent"})
    train_freq: int = field(default=1, metadata={"help": "environment steps per gradient step"})
    target_update_interval: int = field(
        default=2_000, metadata={"help": "steps between target-network copies"}
    )
    exploration_fraction: float = field(
        default=0.6, metadata={"help": "share of training over which epsilon decays"}
    )
    exploration_initial_eps: float = field(default=1.0, metadata={"help": "initial teacher probability"})
    exploration_final_eps: float = field(default=0.1, metadata={"help": "final teacher probability"})
    hidden: str = field(default="256,256", metadata={"help": "Q-network hidden layer sizes"})
    head: str = field(
        default="bit-flip",
        metadata={"help": "head: bit-flip (flip symmetry built in, ours) or mlp; see agents.q_networks"},
    )
    num_envs: int = field(
        default=4, metadata={"help": "environment copies, stepped as one batch (hashing_gym.sb3)"}
    )
    checkpoint_every: int = field(default=50_000, metadata={"help": "steps between checkpoints"})
    eval_every: int = field(
        default=25_000, metadata={"help": "steps between retrieval evaluations (0: never)"}
    )


def teacher_actions(env: VecEnv) -> np.ndarray:
    """The teacher's action (``expert_action``) of every env copy in its current state.

    One call for all copies on the batched env (``hashing_gym.sb3``), one per env object on a
    ``DummyVecEnv``.
    """
    batched = env.unwrapped
    if isinstance(batched, HashingVecEnv):
        return np.asarray(batched.batch_method("expert_action"))
    return np.asarray(env.env_method("expert_action"))


class GuidedDQN(DQN):
    """SB3 DQN whose exploratory actions are the teacher's (``expert_action`` of each env).

    With probability ``exploration_rate`` an environment executes its teacher's action, else the
    greedy action of the Q-network; the executed action is what the replay buffer stores.
    """

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        explore = np.random.rand(n_envs) < self.exploration_rate  # SB3 seeds numpy's global RNG
        if explore.all():
            actions = teacher_actions(self.env)
        else:
            actions, _ = self.predict(self._last_obs, deterministic=True)
            if explore.any():
                actions = np.where(explore, teacher_actions(self.env), actions)
        return actions, actions


MODEL_CLASS = GuidedDQN  # the SB3 class of this trainer's models (agents.convert reads old zips with it)


def encode_split(model: DQN, features: np.ndarray, bits: int) -> np.ndarray:
    """Codes of items under the greedy policy (DRLH's test phase: random start codes, at most b steps)."""
    return encode_batch(lambda obs: model.predict(obs, deterministic=True)[0], features, bits)


def default_timesteps(args: Args, dataset: HashingDataset) -> int:
    """Budget that scales with the data and the code length: ``steps_per_item`` steps per train item."""
    steps_per_item = args.steps_per_item if args.steps_per_item is not None else round(12.5 * args.bits)
    return steps_per_item * dataset.train.n


def check_args(args: Args) -> list[int]:
    """Refuse bad arguments with a one-line message; return the hidden layer sizes."""
    if args.env != "BinaryCodeTravel-v0":
        raise UsageError(f"dqn trains BinaryCodeTravel-v0 (a Discrete action), got --env {args.env}")
    check_common_args(
        args,
        positive=(
            "steps_per_item", "buffer_size", "batch_size", "train_freq", "target_update_interval",
            "num_envs", "checkpoint_every",
        ),
        non_negative=("learning_starts",),
    )  # fmt: skip
    if args.head not in HEADS:
        raise UsageError(f"--head must be one of {', '.join(HEADS)}, got {args.head!r}")
    return parse_hidden(args.hidden)


def make_model(args: Args, env: Any, folder: Path, hidden: list[int]) -> GuidedDQN:
    """A new GuidedDQN on ``env``, as a fresh run builds it (``--resume`` then gives it its checkpoint)."""
    device = resolve_device(args.device)
    return GuidedDQN(
        GuidedDQNPolicy,
        env,
        learning_rate=args.learning_rate,
        buffer_size=args.buffer_size,
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        gamma=args.gamma,
        train_freq=args.train_freq,
        target_update_interval=args.target_update_interval,
        exploration_fraction=args.exploration_fraction,
        exploration_initial_eps=args.exploration_initial_eps,
        exploration_final_eps=args.exploration_final_eps,
        policy_kwargs={"net_arch": hidden, "head": args.head},
        tensorboard_log=str(folder / "tb"),
        device=device,
        seed=args.seed,
        verbose=0,
    )


@releases_run_lock
def main(args: Args) -> dict[str, Any]:
    """Train GuidedDQN, encode, evaluate; write model.pt and results.json into the run folder."""
    hidden = check_args(args)
    set_threads(args.threads)
    dataset = load_run_dataset(args)
    folder = open_run(args, ALGO)
    timesteps = args.timesteps if args.timesteps is not None else default_timesteps(args, dataset)

    # ENV SETUP: the train split, random start codes, DRLH's reward; the copies step as one batch.
    env = make_vec_env(
        "BinaryCodeTravel-v0", n_envs=args.num_envs, seed=args.seed, dataset=dataset, bits=args.bits
    )

    # ALGO LOGIC: DQN with teacher-guided epsilon-greedy exploration.
    model = make_model(args, env, folder, hidden)
    results = train_sb3(model, ALGO, args, folder, dataset, timesteps, encode_split)
    env.close()
    return results


def load_model(folder: Path, device: str = "auto") -> GuidedDQN:
    """The trained model of a run folder: built from its args.json, given the parameters of model.pt."""
    return load_sb3_model(
        folder, ALGO, Args, lambda args, env: make_model(args, env, Path(folder), check_args(args)), device
    )


def make_env(dataset: HashingDataset, bits: int) -> gym.Env:
    """The training environment of a run, for inspection or further training."""
    return gym.make("BinaryCodeTravel-v0", dataset=dataset, bits=bits)
