"""PPO on RankListHash-v0 (or SequentialHashBits-v0), as third-party RL code would train it (SB3).

``MlpPolicy`` sees an item's features and emits its whole code as a ``MultiBinary(bits)`` action
(independent Bernoulli bits); the reward is the code's average precision against the env's
database codes. With one-step episodes PPO's advantage is the reward minus the value of the item.
Encoding is ``model.predict(features, deterministic=True)`` (bit = 1 where p > 0.5).

The database (our defaults; the experiments: benchmarks/RESULTS.md, "SB3 trainers at 32 bits on digits28:
what stalls them"): the env runs with ``database="fixed"`` and every ``--db-refresh`` steps (at the next
rollout start) the deterministic policy re-encodes the train split into every copy's database
(``set_database_codes``), the paper's database network. The env's own ``database="bank"`` (``--database
bank --db-refresh 0``: each copy keeps the last code sampled for each item, no callback) gives every copy
its own bank, written one item per step: with N items and n copies an item's code is rewritten once every
N x n steps, so the references lag the policy by that much and are sampled, not deterministic codes. On
9,782 items at 32 bits that stalled PPO at mAP 0.89 after 3M steps with 64 copies. The policy and value
networks are ReLU MLPs with PyTorch's default initialisation (``--activation relu --no-ortho-init``;
SB3's defaults are Tanh and orthogonal initialisation), the network of ``mlp-code``'s classifier, and
the learning rate falls linearly to 0 over the run (``--anneal-lr``; SB3's default is constant).

The ``--num-envs`` copies step as one batch (``hashing_gym.sb3.make_vec_env``: SB3's ``VecEnv``
over the batched env; copy i follows the trajectory that ``DummyVecEnv``'s env i would). A resumed
run (``--resume DIR``) continues exactly from the last checkpoint (``agents.sb3_state``), databases
included.

Run: ``python -m agents.train ppo [--bits 16] [--epochs 150] [--out DIR]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

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
    read_run_args,
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
DATABASES: tuple[str, ...] = ("fixed", "bank")
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}
# The values that runs recorded before these options existed trained with (their args.json lacks the
# keys, and the defaults changed): a resumed or loaded old run is rebuilt as it was trained.
RECORDED_BEFORE: dict[str, Any] = {
    "database": "bank",
    "db_refresh": 0,
    "activation": "tanh",
    "ortho_init": True,
    "anneal_lr": False,
}


@dataclass
class PolicyArgs:
    """The policy's, the learning-rate schedule's and the database's options of ppo and a2c.

    Our defaults; the module docstring says why.
    """

    activation: str = field(
        default="relu", metadata={"help": "hidden activation: relu (ours, as mlp-code) or tanh (SB3's)"}
    )
    ortho_init: bool = field(
        default=False, metadata={"help": "SB3's orthogonal initialisation (our default: PyTorch's own)"}
    )
    database: str = field(
        default="fixed",
        metadata={
            "help": f"{ENV_ID}'s database: fixed (written only by --db-refresh; our default) or bank "
            "(each copy's last sampled codes, the env's default)"
        },
    )
    anneal_lr: bool = field(
        default=True, metadata={"help": "decay the learning rate linearly to 0 over the run (our default)"}
    )
    db_refresh: int = field(
        default=5_000,
        metadata={
            "help": "env steps between re-encodings of the train split into every copy's database by "
            "the deterministic policy, at a rollout start (0: never)"
        },
    )


@dataclass
class Args(PolicyArgs, CommonArgs):
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
    check_common_args(
        args, positive=[name for name in counts if hasattr(args, name)], non_negative=["db_refresh"]
    )
    check_policy_args(args)
    if args.database not in DATABASES:
        raise UsageError(f"--database must be one of {', '.join(DATABASES)}, got {args.database!r}")
    if args.env == ENV_ID and args.database == "fixed" and args.db_refresh == 0:
        raise UsageError(
            "--database fixed with --db-refresh 0 would rank against random codes for the whole run: "
            "give --db-refresh K > 0 or --database bank"
        )
    return parse_hidden(args.hidden)


def check_policy_args(args: Any) -> None:
    """Refuse an unknown ``--activation`` (ppo, a2c and rppo)."""
    if args.activation not in ACTIVATIONS:
        raise UsageError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {args.activation!r}")


def policy_kwargs(args: Any, hidden: list[int]) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` of ``--hidden``, ``--activation`` and ``--ortho-init`` (ppo, a2c and rppo)."""
    return {
        "net_arch": hidden,
        "activation_fn": ACTIVATIONS[args.activation],
        "ortho_init": bool(args.ortho_init),
    }


def learning_rate(args: Any) -> float | LinearSchedule:
    """``--learning-rate``, falling linearly to 0 over the run with ``--anneal-lr`` (ppo, a2c, rppo).

    SB3 evaluates the schedule at the progress left, computed from the model's step count and the
    run's total, so a resumed run follows the same schedule.
    """
    return LinearSchedule(args.learning_rate, 0.0, 1.0) if args.anneal_lr else args.learning_rate


def as_recorded(args: Any, folder: str | Path, before: dict[str, Any] = RECORDED_BEFORE) -> Any:
    """``args`` of the run in ``folder`` with the values it trained with for options its args.json lacks.

    ``before`` (``RECORDED_BEFORE``): a run recorded before an option existed trained with that value,
    not with today's default (a Tanh network loaded as ReLU would encode garbage without an error).
    """
    recorded = read_run_args(folder)
    missing = {key: value for key, value in before.items() if key not in recorded and hasattr(args, key)}
    return dataclasses.replace(args, **missing) if missing else args


class DatabaseRefresh(BaseCallback):
    """Every ``every`` steps, at a rollout start, the deterministic policy re-encodes the train split.

    Every env copy gets the codes as its database (RankListHash-v0) or code bank
    (SequentialHashBits-v0). The first refresh is at step 0: the database starts as the initial
    policy's codes, not random ones.
    """

    def __init__(
        self,
        features: np.ndarray,
        bits: int,
        every: int,
        encode: Callable[[Any, np.ndarray, int], np.ndarray],
    ) -> None:
        super().__init__()
        self.features, self.bits, self.every, self.encode = features, bits, every, encode
        self._next = 0

    def _on_rollout_start(self) -> None:
        if self.every and self.num_timesteps >= self._next:
            self._next = self.num_timesteps + self.every
            codes = self.encode(self.model, self.features, self.bits)
            sequential = isinstance(self.model.observation_space, spaces.Dict)
            self.training_env.env_method("set_code_bank" if sequential else "set_database_codes", codes)

    def _on_step(self) -> bool:
        return True

    def get_state(self) -> dict[str, int]:
        """When the next refresh falls (checkpoints keep it: a resumed run refreshes when this one would)."""
        return {"next": self._next}

    def set_state(self, state: dict[str, int]) -> None:
        """Continue from :meth:`get_state`."""
        self._next = int(state["next"])


def make_model(args: Args, env: Any, folder: Path, hidden: list[int]) -> PPO:
    """A new PPO on ``env``, as a fresh run builds it (``--resume`` then gives it its checkpoint)."""
    device = resolve_device(args.device)
    return PPO(
        "MultiInputPolicy" if args.env == SEQUENTIAL_ID else "MlpPolicy",
        env,
        learning_rate=learning_rate(args),
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        ent_coef=args.ent_coef,
        clip_range=args.clip_range,
        policy_kwargs=policy_kwargs(args, hidden),
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
    if args.resume:
        args = as_recorded(args, args.resume)
    hidden = check_args(args, algo)
    set_threads(args.threads)
    dataset = load_run_dataset(args)
    folder = open_run(args, algo)
    timesteps = args.timesteps if args.timesteps is not None else default_timesteps(args, dataset)

    # ENV SETUP: the env on the train split, a database per copy (fixed: written by the refresh; bank:
    # each copy's last sampled codes); the copies step as one batch (SB3's VecEnv semantics; copy i
    # draws as DummyVecEnv's env i would).
    env_kwargs: dict[str, Any] = {"dataset": dataset, "bits": args.bits}
    if args.env == SEQUENTIAL_ID:
        env_kwargs["group"] = args.group
    else:
        env_kwargs["database"] = args.database
    env = make_vec_env(args.env, n_envs=args.num_envs, seed=args.seed, **env_kwargs)

    # ALGO LOGIC: the SB3 model; MlpPolicy (MultiInputPolicy on SequentialHashBits) over MultiBinary;
    # the databases follow the deterministic policy (the paper's database network).
    model = make_model(args, env, folder, hidden)
    refresh = [DatabaseRefresh(dataset.train.features, args.bits, args.db_refresh, encode_split)]
    # (none at --db-refresh 0: checkpoints of runs from before the refresh hold no state of it)
    callbacks = refresh if args.db_refresh else []
    results = train_sb3(
        model, algo, args, folder, dataset, timesteps, encode_split, extra_callbacks=callbacks
    )
    env.close()
    return results


def main(args: Args) -> dict[str, Any]:
    """Train PPO, encode, evaluate; write model.pt and results.json into the run folder."""
    return train_multibinary(args, ALGO, make_model)


def load_model(folder: Path, device: str = "auto") -> PPO:
    """The trained model of a run folder: built from its args.json, given the parameters of model.pt."""

    def build(args: Args, env: Any) -> PPO:
        args = as_recorded(args, folder)
        return make_model(args, env, Path(folder), check_args(args))

    return load_sb3_model(folder, ALGO, Args, build, device)


def make_env(dataset: HashingDataset, bits: int, env_id: str = ENV_ID) -> gym.Env:
    """The training environment of a run, for inspection or further training."""
    return gym.make(env_id, dataset=dataset, bits=bits)
