r"""REINFORCE on RankListHash-v0: deep policy hashing with listwise supervision, in plain torch.

The paper (Wang, Lai, Yang, Yin, arXiv 1904.01728) trains two networks in parallel:

1. the *database network* encodes every training item into a binary code, giving the rank list
   of the whole training set;
2. the *query network*, a policy over codes, is trained by policy gradient to maximise the
   average precision of the list its code induces (the env's reward);
3. the database network is updated as the query network; repeat.

Here the query network is an MLP from features to one logit per bit: a code is drawn bit by bit
from independent Bernoulli distributions, :math:`\pi(h | x) = \prod_k p_k^{h_k} (1 - p_k)^{1 - h_k}`.
Each update samples a batch of training items, samples one code for each, gets all their rewards
in one call (``env.unwrapped.act``, the batched form of the env's step) and follows
:math:`\nabla J = E[(r - b) \nabla \log \pi(h | x)]` with a baseline b (a running mean of the
reward, or a learned one). Every ``--db-refresh K`` updates the database network takes the query
network's weights and re-encodes the whole train split with deterministic codes (bit = 1 where
p > 0.5), which go to the env through ``set_database_codes``; ``--db-refresh 0`` uses the env's
own bank instead (the last sampled code of each item). Encoding for evaluation is the same
deterministic code.

Run: ``python -m agents.train reinforce --device cpu [--bits 16] [--epochs 500] [--out DIR]``. On a
CUDA device (``--device cuda[:N]``, or the default ``auto`` where torch sees a GPU: it prints a line
saying so), ``agents.train`` runs ``agents.reinforce_torch`` instead: the same algorithm as a
torch-native loop over the batched env on the GPU (its own options: ``--device cuda --help``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import hashing_gym  # noqa: F401 - registers the environments
from agents.checkpoint import Checkpoints, read_tensors, write_json, write_tensors
from agents.common import (
    CommonArgs,
    InterruptRequest,
    TrainingLog,
    UsageError,
    announce_run,
    check_common_args,
    load_run_dataset,
    open_run,
    parse_hidden,
    releases_run_lock,
    resolve_device,
    results_record,
    retrieval_results,
    set_threads,
)
from agents.report import finish_run
from hashing_gym import ranking
from hashing_gym.data import HashingDataset
from hashing_gym.envs import RankListHashEnv

ALGO = "reinforce"
ENV_ID = "RankListHash-v0"
MODEL_FILE = "model.pt"
BASELINES: tuple[str, ...] = ("mean", "learned", "none")


@dataclass
class Args(CommonArgs):
    """REINFORCE hyperparameters (defaults reach mAP >= 0.95 on digits at 16-64 bits in under a minute)."""

    env: str = field(default=ENV_ID, metadata={"help": "environment id (only RankListHash-v0)"})
    epochs: float = field(
        default=500.0,
        metadata={
            "help": "default budget: timesteps = epochs x train items (one timestep = one sampled code)"
        },
    )
    batch_size: int = field(
        default=256, metadata={"help": "items (sampled codes) per policy-gradient update"}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    hidden: str = field(default="256", metadata={"help": "query network hidden layer sizes, comma-separated"})
    db_refresh: int = field(
        default=10,
        metadata={
            "help": "updates between database-network re-encodings of the train split (0: the env's bank)"
        },
    )
    baseline: str = field(
        default="mean", metadata={"help": "reward baseline: mean (running), learned or none"}
    )
    baseline_decay: float = field(default=0.9, metadata={"help": "decay of the running-mean baseline"})
    ent_coef: float = field(default=0.0, metadata={"help": "entropy bonus coefficient"})
    ties: str = field(default="average", metadata={"help": "reward's order within ties: average or stable"})
    reward_topk: int | None = field(
        default=None, metadata={"help": "reward = AP@k of the list; default AP@all"}
    )
    checkpoint_every: int = field(
        default=1000, metadata={"help": "updates between checkpoints for --resume (0: never)"}
    )
    eval_every: int = field(
        default=500, metadata={"help": "updates between retrieval evaluations (0: never)"}
    )


def mlp(inputs: int, hidden: list[int], outputs: int) -> nn.Sequential:
    """Linear layers with ReLU between them."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)


class QueryNetwork(nn.Module):
    """MLP from features to one logit per bit: the Bernoulli policy over codes."""

    def __init__(self, feature_dim: int, bits: int, hidden: list[int]) -> None:
        super().__init__()
        self.config = {"feature_dim": feature_dim, "bits": bits, "hidden": list(hidden)}
        self.body = mlp(feature_dim, hidden, bits)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (n, bits) of P(bit = 1)."""
        return self.body(features)

    @property
    def bits(self) -> int:
        """Code length."""
        return self.config["bits"]


def make_env(dataset: HashingDataset, args: Args) -> RankListHashEnv:
    """The training environment: the train split; fixed database when the database network refreshes it."""
    env = gym.make(
        ENV_ID,
        dataset=dataset,
        bits=args.bits,
        ties=args.ties,
        topk=args.reward_topk,
        database="fixed" if args.db_refresh > 0 else "bank",
    )
    return env.unwrapped


def encode_split(model: QueryNetwork, features: np.ndarray, bits: int, batch: int = 4096) -> np.ndarray:
    """Deterministic codes of items: bit = 1 where p > 0.5 (logit > 0); uint8 (n, bits)."""
    if model.bits != bits:
        raise ValueError(f"the model encodes {model.bits} bits, asked for {bits}")
    device = next(model.parameters()).device
    codes = np.empty((len(features), bits), dtype=np.uint8)
    with torch.no_grad():
        for start in range(0, len(features), batch):
            # A copy: data set arrays are read-only, which torch warns about.
            chunk = torch.tensor(np.asarray(features[start : start + batch], dtype=np.float32), device=device)
            codes[start : start + batch] = (model(chunk) > 0).cpu().numpy()
    return codes


def evaluate_model(model: QueryNetwork, dataset: HashingDataset, bits: int, topk: int) -> dict[str, float]:
    """Encode query and database deterministically and rank."""
    query = encode_split(model, dataset.query.features, bits)
    database = encode_split(model, dataset.database.features, bits)
    return retrieval_results(dataset, query, database, topk)


def save_model(model: QueryNetwork, path: Path) -> None:
    """Save weights (on the CPU) and architecture atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.cpu() for key, value in model.state_dict().items()}
    write_tensors(path, {"config": model.config, "state_dict": state})


def load_model(folder: Path, device: str = "auto") -> QueryNetwork:
    """The trained query network of a run folder."""
    saved = read_tensors(Path(folder) / MODEL_FILE, map_location="cpu")
    model = QueryNetwork(**saved["config"])
    model.load_state_dict(saved["state_dict"])
    return model.to(resolve_device(device)).eval()


def default_timesteps(args: Args, dataset: HashingDataset) -> int:
    """Budget that scales with the data: ``epochs`` sampled codes per train item."""
    return max(1, math.ceil(args.epochs * dataset.train.n))


def check_args(args: Args) -> list[int]:
    """Refuse bad arguments with a one-line message; return the hidden layer sizes."""
    if args.env != ENV_ID:
        raise UsageError(
            f"reinforce trains {ENV_ID} (SequentialHashBits-v0 goes to agents.drlih), got --env {args.env}"
        )
    hidden = parse_hidden(args.hidden)
    check_common_args(args, positive=("batch_size", "epochs", "learning_rate"), non_negative=("db_refresh",))
    checks = [
        (
            args.baseline in BASELINES,
            f"--baseline must be one of {', '.join(BASELINES)}, got {args.baseline!r}",
        ),
        (0 <= args.baseline_decay < 1, f"--baseline-decay must be in [0, 1), got {args.baseline_decay}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return hidden


@dataclass
class Learner:
    """Everything that changes during training: a checkpoint holds all of it, so a resumed run is exact."""

    query_net: QueryNetwork
    database_net: QueryNetwork
    value_net: nn.Module
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator  # item batches
    generator: torch.Generator  # sampled codes
    running_mean: float | None = None  # the "mean" baseline
    update: int = 0
    env_steps: int = 0

    def state_dict(self, env: RankListHashEnv) -> dict[str, Any]:
        """The training state, with the env's database codes and random stream, as tensors and containers."""
        return {
            "query_net": self.query_net.state_dict(),
            "database_net": self.database_net.state_dict(),
            "value_net": self.value_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "running_mean": self.running_mean,
            "update": self.update,
            "env_steps": self.env_steps,
            "database_codes": torch.from_numpy(np.array(env.database_codes)),
            "env_rng": env.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any], env: RankListHashEnv) -> None:
        """Restore a state written by :meth:`state_dict`."""
        self.query_net.load_state_dict(state["query_net"])
        self.database_net.load_state_dict(state["database_net"])
        self.value_net.load_state_dict(state["value_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self.running_mean, self.update, self.env_steps = (
            state["running_mean"],
            state["update"],
            state["env_steps"],
        )
        env.set_database_codes(state["database_codes"].numpy())
        # Checkpoints from before env_rng: the env draws only at its seeded reset, which the resumed
        # run repeats, so its stream is already where the interrupted run's was.
        if "env_rng" in state:
            env.np_random.bit_generator.state = state["env_rng"]


def policy_gradient_loss(
    logits: torch.Tensor,
    codes: torch.Tensor,
    rewards: torch.Tensor,
    batch_mean: Any,
    values: torch.Tensor | None,
    running_mean: Any,
    args: Args,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """REINFORCE's loss for a batch of sampled codes, with the baseline ``args.baseline``.

    ``log pi(h|x) = -BCE(logits, h)`` summed over bits. Baselines: ``"learned"`` (``values`` of a
    value network, fitted by MSE), ``"mean"`` (an exponential running mean of the batches' mean
    reward ``batch_mean``, a float or a tensor; the first batch's mean starts it, so early
    advantages are not all positive) or ``"none"``.

    Returns:
        ``(loss, policy_loss, entropy, value_loss, running_mean)``, the last updated for ``"mean"``.
    """
    log_prob = -nn.functional.binary_cross_entropy_with_logits(logits, codes, reduction="none").sum(dim=1)
    entropy = torch.distributions.Bernoulli(logits=logits).entropy().sum(dim=1).mean()
    value_loss = torch.zeros((), device=logits.device)
    if args.baseline == "learned":
        value_loss = nn.functional.mse_loss(values, rewards)
        advantages = rewards - values.detach()
    elif args.baseline == "mean":
        baseline = batch_mean if running_mean is None else running_mean
        advantages = rewards - baseline
        running_mean = args.baseline_decay * baseline + (1 - args.baseline_decay) * batch_mean
    else:
        advantages = rewards
    policy_loss = -(advantages * log_prob).mean()
    loss = policy_loss - args.ent_coef * entropy + value_loss
    return loss, policy_loss, entropy, value_loss, running_mean


@releases_run_lock
def main(args: Args) -> dict[str, Any]:
    """Train the query network, encode, evaluate; write model.pt and results.json into the run folder."""
    hidden = check_args(args)
    set_threads(args.threads)
    # The reward kernels run on numba's thread pool; match it to --threads too (a busy pool on a
    # shared CPU costs more than the batch's few hundred thousand popcounts).
    ranking.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    dataset = load_run_dataset(args)
    folder = open_run(args, ALGO)
    timesteps = args.timesteps if args.timesteps is not None else default_timesteps(args, dataset)

    # ENV SETUP: the train split; a seeded reset draws the initial random database codes.
    env = make_env(dataset, args)
    env.reset(seed=args.seed)
    features = torch.as_tensor(np.array(env.features), device=device)

    # The networks' initial weights come from the seed without touching torch's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        query_net = QueryNetwork(env.feature_dim, args.bits, hidden).to(device)
        value_net = mlp(env.feature_dim, hidden, 1).to(device)  # the learned baseline V(x)
    parameters = list(query_net.parameters()) + (
        list(value_net.parameters()) if args.baseline == "learned" else []
    )
    learner = Learner(
        query_net=query_net,
        database_net=copy.deepcopy(query_net).eval(),
        value_net=value_net,
        optimizer=torch.optim.Adam(parameters, lr=args.learning_rate),
        rng=np.random.default_rng(args.seed),
        generator=torch.Generator(device=device).manual_seed(args.seed),
    )

    def refresh_database() -> None:
        # ALGO LOGIC: the database network becomes the query network and re-encodes the split.
        learner.database_net.load_state_dict(query_net.state_dict())
        env.set_database_codes(encode_split(learner.database_net, env.features, args.bits))

    checkpoints = Checkpoints(folder, ALGO)
    elapsed = 0.0  # training seconds of earlier processes (resumed runs)
    if args.resume:
        checkpoint, saved = checkpoints.load_torch(map_location="cpu")
        learner.load_state_dict(saved, env)
        elapsed = checkpoint.train_seconds
    elif args.db_refresh > 0:
        refresh_database()

    announce_run(folder, ALGO, args, dataset, str(device), f"{timesteps:,} env steps (one code each)")
    log = TrainingLog(folder, ALGO, timesteps, start_step=learner.env_steps)
    if args.eval_every and learner.env_steps == 0:  # the untrained policy: where the mAP curve starts
        with log.paused():
            log.eval(evaluate_model(query_net, dataset, args.bits, args.topk), 0)
    reward_sum, reward_count = 0.0, 0  # rewards (one-step episodes' returns) since the last point
    start = time.perf_counter()
    progress = tqdm(total=timesteps, initial=learner.env_steps, unit="step", disable=None, desc=ALGO)
    with InterruptRequest() as stop:
        while learner.env_steps < timesteps:
            batch = min(args.batch_size, timesteps - learner.env_steps)
            indices = learner.rng.choice(env.num_items, size=batch, replace=batch > env.num_items)
            x = features[indices]

            # ALGO LOGIC: sample a code per item from the Bernoulli policy; rewards for the whole batch.
            logits = query_net(x)
            codes = torch.bernoulli(torch.sigmoid(logits).detach(), generator=learner.generator)
            rewards_np = env.act(indices, codes.cpu().numpy().astype(np.uint8))
            rewards = torch.as_tensor(rewards_np, dtype=torch.float32, device=device)

            # ALGO LOGIC: policy gradient with a baseline.
            values = value_net(x).squeeze(1) if args.baseline == "learned" else None
            loss, policy_loss, entropy, value_loss, learner.running_mean = policy_gradient_loss(
                logits, codes, rewards, float(rewards_np.mean()), values, learner.running_mean, args
            )
            learner.optimizer.zero_grad()
            loss.backward()
            learner.optimizer.step()
            learner.update += 1
            learner.env_steps += batch

            if args.db_refresh > 0 and learner.update % args.db_refresh == 0:
                refresh_database()
            progress.update(batch)

            # LOGGING, evaluation and checkpoints, between updates.
            step = learner.env_steps
            reward_sum, reward_count = reward_sum + float(rewards_np.sum()), reward_count + batch
            if log.due(step) or step >= timesteps:
                extra = {"train/policy_loss": policy_loss.item(), "train/entropy": entropy.item()}
                if args.baseline == "learned":
                    extra["train/value_loss"] = value_loss.item()
                elif learner.running_mean is not None:
                    extra["train/baseline"] = float(learner.running_mean)
                log.train(step, reward_sum / reward_count, loss.item(), **extra)
                reward_sum, reward_count = 0.0, 0
            if args.eval_every and learner.update % args.eval_every == 0:
                with log.paused():
                    log.eval(evaluate_model(query_net, dataset, args.bits, args.topk), step)
            checkpoint_due = args.checkpoint_every and learner.update % args.checkpoint_every == 0
            if checkpoint_due or stop.requested:
                seconds = elapsed + time.perf_counter() - start
                checkpoints.save_torch(learner.state_dict(env), learner.env_steps, seconds)
            if stop.requested:
                progress.close()
                log.close()
                raise KeyboardInterrupt
    progress.close()
    train_seconds = elapsed + time.perf_counter() - start
    save_model(query_net, folder / MODEL_FILE)

    metrics = evaluate_model(query_net, dataset, args.bits, args.topk)
    if not (args.eval_every and learner.update % args.eval_every == 0):  # else logged already
        log.eval(metrics, learner.env_steps)
    log.close()
    results = results_record(ALGO, args, metrics, train_seconds, learner.env_steps, model_file=MODEL_FILE)
    write_json(folder / "results.json", results)
    return finish_run(folder, results, dataset, lambda x: encode_split(query_net, x, args.bits))
