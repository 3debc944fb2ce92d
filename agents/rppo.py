"""RecurrentPPO (sb3-contrib, LSTM policy) on SequentialHashBits-v0: DRLIH's MDP, a generic recurrent agent.

The LSTM's state is reset at the start of each episode and carried across its T = bits / group
steps, so it plays the role of DRLIH's RNN hidden state (the env shows only the features and the
bits decided so far). The critic is a feed-forward head on the observation, which already holds the
whole state of the MDP (features, bits decided so far, step), not a second LSTM (``--critic-lstm``;
our default: it halves the recurrent work, most of a run's time), and the MLPs after the LSTM use
ReLU with PyTorch's initialisation (``--activation``, ``--ortho-init``; SB3's are Tanh, orthogonal).

The env rewards each step by the triplet accuracy it adds against its code bank; at the end of
each episode the env writes the sampled code into its bank, and every ``bank_refresh`` steps a
callback replaces the banks with the greedy policy's codes of the whole train split (as
``agents.drlih`` does), so the references follow the current policy.

Our defaults, for speed per code (measured on 9,782 items at 32 bits: benchmarks/RESULTS.md, "SB3
trainers at 32 bits on digits28: what stalls them"): two steps a code (``--group`` bits / 2; DRLIH's
groups are smaller, and each step costs an LSTM step in the rollout and in every update), 64 positives
and negatives per episode (``--pairs``; a less noisy triplet accuracy for the same LSTM work), two PPO
epochs a rollout, and ``agents.drlih``'s entropy bonus (0.002) and annealed learning rate (``--anneal-lr``).

After training, the deterministic policy encodes the query and database splits, all items at once
(``hashing_gym.envs.encode_sequential``), and Hamming ranking gives the results.

Run: ``python -m agents.train rppo [--bits 16] [--group 8] [--timesteps N] [--out DIR]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from sb3_contrib import RecurrentPPO

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
from agents.ppo import DatabaseRefresh, as_recorded, check_policy_args, learning_rate, policy_kwargs
from hashing_gym.data import HashingDataset
from hashing_gym.envs import encode_sequential
from hashing_gym.sb3 import make_vec_env

ALGO = "rppo"
ENV_ID = "SequentialHashBits-v0"
MODEL_FILE = SB3_MODEL_FILE
# What runs recorded before these options existed trained with (agents.ppo.as_recorded).
RECORDED_BEFORE: dict[str, Any] = {
    "activation": "tanh",
    "ortho_init": True,
    "critic_lstm": True,
    "anneal_lr": False,
}


@dataclass
class Args(CommonArgs):
    """RecurrentPPO hyperparameters (sb3-contrib ``MultiInputLstmPolicy``)."""

    env: str = field(default=ENV_ID, metadata={"help": "environment id (SequentialHashBits-v0 only)"})
    group: int | None = field(
        default=None,
        metadata={
            "help": "bits decided per step (the paper's action group); default bits / 2, two steps a "
            "code (ours: see the module docstring)"
        },
    )
    pairs: int = field(
        default=64, metadata={"help": "positives and negatives drawn per episode (env's P; ours: 64)"}
    )
    margin: float = field(default=0.0, metadata={"help": "Hamming margin of a correctly ordered pair"})
    episodes_per_item: int = field(
        default=40,
        metadata={
            "help": "default budget: timesteps = episodes_per_item x train items x steps per episode "
            "(scales with the data)"
        },
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    anneal_lr: bool = field(
        default=True, metadata={"help": "decay the learning rate linearly to 0 (ours, as agents.drlih)"}
    )
    num_envs: int = field(
        default=16, metadata={"help": "environment copies, stepped as one batch (hashing_gym.sb3)"}
    )
    n_steps: int = field(default=64, metadata={"help": "steps per environment per rollout"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size (steps)"})
    n_epochs: int = field(default=2, metadata={"help": "passes over each rollout"})
    gamma: float = field(default=1.0, metadata={"help": "discount (the return telescopes at 1)"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    ent_coef: float = field(default=0.002, metadata={"help": "entropy bonus weight (as agents.drlih)"})
    lstm_hidden: int = field(default=128, metadata={"help": "LSTM hidden size"})
    hidden: str = field(default="128", metadata={"help": "policy and value MLP sizes after the LSTM"})
    activation: str = field(default="relu", metadata={"help": "MLP activation: relu (ours) or tanh (SB3's)"})
    ortho_init: bool = field(
        default=False, metadata={"help": "SB3's orthogonal initialisation (our default: PyTorch's own)"}
    )
    critic_lstm: bool = field(
        default=False,
        metadata={"help": "the critic's own LSTM (ours: a feed-forward critic on the Markov observation)"},
    )
    bank_refresh: int = field(
        default=20_000, metadata={"help": "steps between re-encodings of the code banks (0: never)"}
    )
    checkpoint_every: int = field(
        default=100_000, metadata={"help": "steps between checkpoints, for --resume"}
    )
    eval_every: int = field(
        default=50_000, metadata={"help": "steps between retrieval evaluations (0: never)"}
    )


class MultiBinaryRecurrentPPO(RecurrentPPO):
    """RecurrentPPO whose rollout buffer keeps ``MultiBinary`` actions as float32.

    sb3-contrib 2.9.2's recurrent rollout buffers store actions in the action space's dtype (int8
    for ``MultiBinary``) and pass them on unconverted, and ``Bernoulli.log_prob`` refuses int8
    ("result type Float can't be cast to ... Char"); SB3's own buffers convert to float32. The
    buffer here allocates float32 actions; nothing else changes.
    """

    def _setup_model(self) -> None:
        super()._setup_model()
        if isinstance(self.action_space, spaces.MultiBinary):
            float_actions = spaces.MultiBinary(self.action_space.n)
            float_actions.dtype = np.dtype(np.float32)
            self.rollout_buffer.action_space = float_actions
            self.rollout_buffer.reset()


# the SB3 class of this trainer's models (agents.convert reads old zips with it)
MODEL_CLASS = MultiBinaryRecurrentPPO


def encode_split(model: RecurrentPPO, features: np.ndarray, bits: int) -> np.ndarray:
    """Codes of items under the deterministic policy, the LSTM state carried over each item's T steps."""
    model_bits = int(model.observation_space["code"].n)
    if bits != model_bits:
        raise ValueError(f"the model encodes {model_bits} bits, asked for {bits}")
    starts = np.ones(len(features), dtype=bool)

    def step(obs: dict[str, np.ndarray], state: Any) -> tuple[np.ndarray, Any]:
        return model.predict(obs, state=state, episode_start=starts & (state is None), deterministic=True)

    return encode_sequential(step, features, bits, int(model.action_space.n))


class BankRefreshCallback(DatabaseRefresh):
    """Every ``every`` steps: the deterministic policy re-encodes the train split into every env's bank.

    ``agents.ppo.DatabaseRefresh`` with the LSTM's encoder (checkpoints keep its state under this name).
    """

    def __init__(self, features: np.ndarray, bits: int, every: int) -> None:
        super().__init__(features, bits, every, encode_split)


def default_timesteps(args: Args, dataset: HashingDataset) -> int:
    """Budget that scales with the data: ``episodes_per_item`` episodes of T steps per train item."""
    return args.episodes_per_item * dataset.train.n * (args.bits // args.group)


def default_group(bits: int) -> int:
    """``--group``'s default: half the code (two steps an episode), the whole code when ``bits`` is odd."""
    return bits // 2 if bits % 2 == 0 else bits


def with_group(args: Args) -> Args:
    """``args`` with ``group`` set (its default resolved), as args.json records it."""
    return args if args.group is not None else dataclasses.replace(args, group=default_group(args.bits))


def check_args(args: Args) -> list[int]:
    """Refuse bad arguments with a one-line message; return the hidden layer sizes."""
    if args.env != ENV_ID:
        raise UsageError(f"rppo trains {ENV_ID}, got --env {args.env}")
    check_common_args(
        args,
        positive=(
            "checkpoint_every", "pairs", "episodes_per_item", "num_envs", "n_steps", "batch_size", "n_epochs",
            "lstm_hidden",
        ),
        non_negative=("bank_refresh",),
    )  # fmt: skip
    check_group(with_group(args))  # after --bits: the default group is half of it
    check_policy_args(args)
    return parse_hidden(args.hidden)


def make_model(args: Args, env: Any, folder: Path, hidden: list[int]) -> MultiBinaryRecurrentPPO:
    """A new RecurrentPPO on ``env``, as a fresh run builds it (``--resume`` then gives it its checkpoint)."""
    device = resolve_device(args.device)
    return MultiBinaryRecurrentPPO(
        "MultiInputLstmPolicy",
        env,
        learning_rate=learning_rate(args),
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        ent_coef=args.ent_coef,
        policy_kwargs={
            **policy_kwargs(args, hidden),
            "lstm_hidden_size": args.lstm_hidden,
            "enable_critic_lstm": bool(args.critic_lstm),
        },
        tensorboard_log=str(folder / "tb"),
        device=device,
        seed=args.seed,
        verbose=0,
    )


@releases_run_lock
def main(args: Args) -> dict[str, Any]:
    """Train RecurrentPPO, encode, evaluate; write model.pt and results.json into the run folder."""
    if args.resume:
        args = as_recorded(args, args.resume, RECORDED_BEFORE)
    args = with_group(args)
    hidden = check_args(args)
    set_threads(args.threads)
    dataset = load_run_dataset(args)
    folder = open_run(args, ALGO)
    timesteps = args.timesteps if args.timesteps is not None else default_timesteps(args, dataset)

    # ENV SETUP: the train split; each env copy keeps its own code bank; the copies step as one batch.
    env_kwargs = {"dataset": dataset, "bits": args.bits, "group": args.group, "pairs": args.pairs}
    env = make_vec_env(ENV_ID, n_envs=args.num_envs, seed=args.seed, **env_kwargs, margin=args.margin)

    # ALGO LOGIC: PPO with an LSTM policy whose state lives for one episode; banks follow the policy.
    model = make_model(args, env, folder, hidden)
    results = train_sb3(
        model,
        ALGO,
        args,
        folder,
        dataset,
        timesteps,
        encode_split,
        extra_callbacks=[BankRefreshCallback(dataset.train.features, args.bits, args.bank_refresh)],
    )
    env.close()
    return results


def load_model(folder: Path, device: str = "auto") -> RecurrentPPO:
    """The trained model of a run folder: built from its args.json, given the parameters of model.pt."""

    def build(args: Args, env: Any) -> RecurrentPPO:
        args = with_group(as_recorded(args, folder, RECORDED_BEFORE))
        return make_model(args, env, Path(folder), check_args(args))

    return load_sb3_model(folder, ALGO, Args, build, device)


def make_env(dataset: HashingDataset, bits: int, group: int = 4) -> gym.Env:
    """The training environment of a run, for inspection or further training."""
    return gym.make(ENV_ID, dataset=dataset, bits=bits, group=group)
