"""DRLIH: a recurrent policy that hashes bit group by bit group, trained by policy gradient (plain torch).

Deep Reinforcement Learning for Image Hashing (Peng, Zhang, Ye, arXiv 1802.02904, IEEE TMM 2020)
on ``SequentialHashBits-v0``. The agent is a recurrent network whose hidden state starts from the
image's features and is carried across the episode's T = bits / group steps; at step t it emits
one Bernoulli probability per bit of the t-th group (the paper's "action group"), so later hash
functions see, through the hidden state and the observed code, what the earlier ones decided.

Training, CleanRL style, batched over items (one update = one episode for each of ``batch_size``
items, ``samples`` episodes per item):

1. roll the stochastic policy over the T steps, building each step's observation exactly as the
   env does (``hashing_gym.envs.encode_sequential``);
2. score the codes with the env's batched reward (``env.unwrapped.rewards``: the triplet accuracy
   gained at each step against the env's code bank, with references drawn by the env's RNG);
3. policy gradient with a baseline: advantages are discounted returns-to-go minus the mean
   return-to-go of the item's other samples (leave-one-out) when ``samples > 1``, else minus a
   learned value of the hidden state; an entropy bonus keeps the bits exploring;
4. every ``bank_refresh`` updates, the greedy policy re-encodes the whole train split and replaces
   the env's code bank (the paper's triplets are coded by the current network).

Differences from the paper and its released code (PKU-ICST-MIPL/DRLIH_TMM2020), on purpose: the
released code feeds a VGG-19 fc feature into an ``RNNCell`` whose input is its own previous hidden
state, emits one bit per step, and minimises ``lambda * log p(greedy code) * triplet_loss +
(1 - lambda) * triplet_loss`` (lambda = 0.001, triplet hinge with margin 1 on the relaxed codes):
almost entirely a differentiable triplet loss. Here the features are given (no CNN), the GRU also
reads the observed code, groups are supported, and learning is by policy gradient on the env's
reward alone, as an RL benchmark needs.

Run: ``python -m agents.train drlih [--bits 16] [--group 1] [--timesteps N] [--out DIR]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import hashing_gym  # noqa: F401 - registers the environments
from agents.checkpoint import Checkpoints, read_tensors, write_json, write_tensors
from agents.common import (
    CommonArgs,
    TrainingLog,
    UsageError,
    announce_run,
    check_common_args,
    check_group,
    load_run_dataset,
    open_run,
    releases_run_lock,
    resolve_device,
    results_record,
    retrieval_results,
    set_threads,
)
from agents.report import finish_run
from hashing_gym.data import HashingDataset
from hashing_gym.envs import encode_sequential

ALGO = "drlih"
ENV_ID = "SequentialHashBits-v0"
MODEL_FILE = "model.pt"


@dataclass
class Args(CommonArgs):
    """DRLIH hyperparameters (defaults: digits at 16 bits in a few minutes on one CPU core)."""

    env: str = field(default=ENV_ID, metadata={"help": "environment id (SequentialHashBits-v0 only)"})
    group: int = field(
        default=4, metadata={"help": "bits decided per step (the paper's action group; 4 like ppo and rppo)"}
    )
    pairs: int = field(default=16, metadata={"help": "positives and negatives drawn per episode (env's P)"})
    margin: float = field(default=0.0, metadata={"help": "Hamming margin of a correctly ordered pair"})
    episodes_per_item: int = field(
        default=250,
        metadata={
            "help": "default budget: timesteps = episodes_per_item x train items x steps per episode "
            "(scales with the data)"
        },
    )
    batch_size: int = field(default=64, metadata={"help": "items per update"})
    samples: int = field(
        default=4, metadata={"help": "episodes sampled per item per update (leave-one-out baseline if > 1)"}
    )
    hidden: int = field(default=128, metadata={"help": "GRU hidden size"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    anneal_lr: bool = field(default=True, metadata={"help": "decay the learning rate linearly to 0"})
    gamma: float = field(default=1.0, metadata={"help": "discount of the per-step rewards"})
    ent_coef: float = field(default=0.002, metadata={"help": "entropy bonus weight"})
    vf_coef: float = field(default=0.5, metadata={"help": "value loss weight (used when samples == 1)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient norm clip"})
    bank_refresh: int = field(
        default=10, metadata={"help": "updates between re-encodings of the env's code bank (0: never)"}
    )
    checkpoint_every: int = field(
        default=100, metadata={"help": "updates between checkpoints, for --resume (0: never)"}
    )
    eval_every: int = field(
        default=100, metadata={"help": "updates between retrieval evaluations (0: never)"}
    )


# ALGO LOGIC: the policy. Hidden state h_0 from the features; each step reads the observation.
class DRLIHPolicy(nn.Module):
    """A GRU policy over ``SequentialHashBits-v0`` observations: per step ``group`` Bernoulli logits, a value.

    Args:
        feature_dim: D, the features' dimension.
        bits: code length b.
        group: bits per step g (b / g steps).
        hidden: GRU hidden size.
    """

    def __init__(self, feature_dim: int, bits: int, group: int, hidden: int) -> None:
        super().__init__()
        self.feature_dim, self.bits, self.group, self.hidden = feature_dim, bits, group, hidden
        self.num_steps = bits // group
        self.encoder = nn.Sequential(nn.Linear(feature_dim, hidden), nn.Tanh())
        self.cell = nn.GRUCell(feature_dim + 2 * bits + self.num_steps, hidden)
        self.actor = nn.Linear(hidden, group)
        self.critic = nn.Linear(hidden, 1)

    def config(self) -> dict[str, int]:
        """The constructor's arguments (saved with the weights)."""
        return {
            "feature_dim": self.feature_dim,
            "bits": self.bits,
            "group": self.group,
            "hidden": self.hidden,
        }

    def forward(self, obs: dict[str, torch.Tensor], h: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """One step: (logits (n, group), value (n,), next hidden state (n, hidden))."""
        features = obs["features"]
        if h is None:
            h = self.encoder(features)
        step = nn.functional.one_hot(obs["step"], self.num_steps).float()
        x = torch.cat([features, obs["code"].float(), obs["decided"].float(), step], dim=1)
        h = self.cell(x, h)
        return self.actor(h), self.critic(h).squeeze(1), h


def as_tensors(obs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of dict observations as tensors."""
    return {key: torch.tensor(np.asarray(value), device=device) for key, value in obs.items()}


def encode_split(model: DRLIHPolicy, features: np.ndarray, bits: int) -> np.ndarray:
    """Codes of items under the greedy policy (bit = 1 where its probability exceeds 1/2)."""
    if bits != model.bits:
        raise ValueError(f"the model encodes {model.bits} bits, asked for {bits}")
    device = next(model.parameters()).device

    @torch.no_grad()
    def greedy(obs: dict[str, np.ndarray], h: torch.Tensor | None) -> tuple[np.ndarray, torch.Tensor]:
        logits, _, h = model(as_tensors(obs, device), h)
        return (logits > 0).to(torch.int8).cpu().numpy(), h

    was_training = model.training
    model.eval()
    codes = encode_sequential(greedy, features, bits, model.group)
    model.train(was_training)
    return codes


def evaluate_model(model: DRLIHPolicy, dataset: HashingDataset, bits: int, topk: int) -> dict[str, float]:
    """Encode query and database with the greedy policy and rank."""
    query = encode_split(model, dataset.query.features, bits)
    database = encode_split(model, dataset.database.features, bits)
    threads = torch.get_num_threads()
    metrics = retrieval_results(dataset, query, database, topk)
    # The ranking kernels' first parallel numba call starts an OpenMP pool that raises torch's thread
    # count to the core count (shared libgomp); small networks then train 20x slower. Restore it.
    torch.set_num_threads(threads)
    return metrics


def rollout(
    model: DRLIHPolicy, features: np.ndarray, device: torch.device
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample an episode per row of ``features``: codes, log-probs (n, T), entropies (n, T), values (n, T)."""
    log_probs: list[torch.Tensor] = []
    entropies: list[torch.Tensor] = []
    values: list[torch.Tensor] = []

    def sample(obs: dict[str, np.ndarray], h: torch.Tensor | None) -> tuple[np.ndarray, torch.Tensor]:
        logits, value, h = model(as_tensors(obs, device), h)
        dist = torch.distributions.Bernoulli(logits=logits)
        action = dist.sample()
        log_probs.append(dist.log_prob(action).sum(1))
        entropies.append(dist.entropy().sum(1))
        values.append(value)
        return action.to(torch.int8).cpu().numpy(), h

    codes = encode_sequential(sample, features, model.bits, model.group)
    return codes, torch.stack(log_probs, 1), torch.stack(entropies, 1), torch.stack(values, 1)


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted sums of the rewards from each step on: (n, T) -> (n, T)."""
    out = np.zeros_like(rewards)
    running = np.zeros(len(rewards))
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out


def default_timesteps(args: Args, dataset: HashingDataset) -> int:
    """Budget that scales with the data: ``episodes_per_item`` episodes of T steps per train item."""
    return args.episodes_per_item * dataset.train.n * (args.bits // args.group)


def check_args(args: Args) -> None:
    """Refuse arguments that cannot work, with a one-line message."""
    if args.env != ENV_ID:
        raise UsageError(f"drlih trains {ENV_ID}, got --env {args.env}")
    check_group(args)
    check_common_args(
        args,
        positive=("batch_size", "samples", "hidden", "pairs", "episodes_per_item"),
        non_negative=("bank_refresh",),
    )


@releases_run_lock
def main(args: Args) -> dict[str, Any]:
    """Train the DRLIH policy, encode, evaluate; write model.pt and results.json into the run folder."""
    check_args(args)
    set_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    dataset = load_run_dataset(args)
    folder = open_run(args, ALGO)
    num_steps = args.bits // args.group
    timesteps = args.timesteps if args.timesteps is not None else default_timesteps(args, dataset)
    episodes_per_update = args.batch_size * args.samples
    num_updates = max(1, -(-timesteps // (episodes_per_update * num_steps)))

    # SEEDING: the env's RNG draws the first bank and the references; numpy and torch the rest.
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    # ENV SETUP: the train split; rewards come from the env's batched method (one MDP implementation).
    env = gym.make(
        ENV_ID, dataset=dataset, bits=args.bits, group=args.group, pairs=args.pairs, margin=args.margin
    )
    env.reset(seed=args.seed)
    hashing_env = env.unwrapped
    train_features = dataset.train.features

    model = DRLIHPolicy(dataset.train.features.shape[1], args.bits, args.group, args.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    progress = {
        "update": 0,
        "env_steps": 0,
        "train_seconds": 0.0,
        "order": rng.permutation(dataset.train.n),
        "cursor": 0,
    }
    checkpoints = Checkpoints(folder, ALGO)
    if args.resume:
        progress = restore_checkpoint(checkpoints, model, optimizer, rng, hashing_env)
    order, cursor, env_steps = progress["order"], progress["cursor"], progress["env_steps"]
    budget = f"{timesteps:,} env steps ({num_updates} updates of {episodes_per_update} episodes)"
    announce_run(folder, ALGO, args, dataset, str(device), budget)
    log = TrainingLog(folder, ALGO, num_updates * episodes_per_update * num_steps, start_step=env_steps)
    if args.eval_every and env_steps == 0:  # the untrained policy: where the mAP curve starts
        with log.paused():
            log.eval(evaluate_model(model, dataset, args.bits, args.topk), 0)
    returns_sum, returns_count = 0.0, 0  # episode returns since the last training point

    def checkpoint(update: int) -> None:
        elapsed = progress["train_seconds"] + time.perf_counter() - start
        state = {
            "update": update,
            "env_steps": env_steps,
            "train_seconds": elapsed,
            "order": order,
            "cursor": cursor,
        }
        save_checkpoint(checkpoints, model, optimizer, rng, hashing_env, state)

    start = time.perf_counter()
    update, stepped = progress["update"], True
    try:
        for update in range(progress["update"] + 1, num_updates + 1):
            # What an interrupted update rolls back to (model and optimizer change only at its end).
            snapshot = (
                rng.bit_generator.state,
                torch.get_rng_state(),
                hashing_env.np_random.bit_generator.state,
            )
            resume_point, stepped = (order, cursor, env_steps), False

            # ALGO LOGIC: the bank holds the current greedy codes of the train split.
            if args.bank_refresh and (update - 1) % args.bank_refresh == 0:
                hashing_env.set_code_bank(encode_split(model, train_features, args.bits))
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (update - 1) / num_updates)

            # Items of this update (an epoch-wise shuffle), each sampled `samples` times.
            if cursor + args.batch_size > len(order):
                order, cursor = rng.permutation(dataset.train.n), 0
            items = order[cursor : cursor + args.batch_size]
            cursor += args.batch_size
            indices = np.repeat(items, args.samples)

            codes, log_probs, entropies, values = rollout(model, train_features[indices], device)
            positives, negatives = hashing_env.sample_references(indices)
            rewards = hashing_env.rewards(codes, positives, negatives)  # (n, T)
            returns = torch.as_tensor(returns_to_go(rewards, args.gamma), dtype=torch.float32, device=device)
            env_steps += rewards.size

            # ALGO LOGIC: policy gradient with a baseline (leave-one-out over an item's samples, or a value).
            if args.samples > 1:
                grouped = returns.view(args.batch_size, args.samples, num_steps)
                others = (grouped.sum(1, keepdim=True) - grouped) / (args.samples - 1)
                advantages = (grouped - others).view(-1, num_steps)
                value_loss = torch.zeros((), device=device)
            else:
                advantages = returns - values.detach()
                value_loss = ((values - returns) ** 2).mean()
            policy_loss = -(log_probs * advantages).sum(1).mean()
            entropy = entropies.sum(1).mean()
            loss = policy_loss - args.ent_coef * entropy + args.vf_coef * value_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            stepped = True

            # LOGGING: an episode's return is the triplet accuracy it gained, from 0.5 at its start.
            returns_sum += float(rewards.sum())
            returns_count += len(rewards)
            if log.due(env_steps) or update == num_updates:
                episode_return = returns_sum / returns_count
                extra = {
                    "rollout/triplet_accuracy": episode_return + 0.5,
                    "train/learning_rate": optimizer.param_groups[0]["lr"],
                    "train/policy_loss": policy_loss.item(),
                    "train/value_loss": value_loss.item(),
                    "train/entropy_per_bit": entropy.item() / args.bits,
                }
                log.train(env_steps, episode_return, loss.item(), **extra)
                returns_sum, returns_count = 0.0, 0
            if args.eval_every and update % args.eval_every == 0:
                with log.paused():
                    log.eval(evaluate_model(model, dataset, args.bits, args.topk), env_steps)
            if args.checkpoint_every and update % args.checkpoint_every == 0:
                checkpoint(update)
    except KeyboardInterrupt:  # Ctrl-C loses nothing: a half-done update is rolled back, redone on --resume
        if not stepped:
            rng.bit_generator.state, torch_state, hashing_env.np_random.bit_generator.state = snapshot
            torch.set_rng_state(torch_state)
            order, cursor, env_steps = resume_point
        checkpoint(update if stepped else update - 1)
        log.close()
        raise
    train_seconds = progress["train_seconds"] + time.perf_counter() - start
    save_model(model, folder / MODEL_FILE)

    metrics = evaluate_model(model, dataset, args.bits, args.topk)
    if not (args.eval_every and update % args.eval_every == 0):  # else logged already
        log.eval(metrics, env_steps)
    log.close()
    results = results_record(ALGO, args, metrics, train_seconds, env_steps, model_file=MODEL_FILE)
    write_json(folder / "results.json", results)
    env.close()
    return finish_run(folder, results, dataset, lambda x: encode_split(model, x, args.bits))


def save_model(model: DRLIHPolicy, path: Path) -> None:
    """Save the weights and their configuration atomically."""
    write_tensors(path, {"config": model.config(), "model": model.state_dict()})


def save_checkpoint(
    checkpoints: Checkpoints,
    model: DRLIHPolicy,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    env: Any,
    progress: dict[str, Any],
) -> None:
    """Everything a run needs to continue exactly: weights, optimizer, RNG states, the env's bank.

    ``progress``: update, env_steps, train_seconds, and the epoch's item order and cursor. Arrays
    are stored as tensors (a ``weights_only`` checkpoint holds no numpy objects).
    """
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "env_rng": env.np_random.bit_generator.state,
        "code_bank": torch.from_numpy(np.array(env.code_bank)),
        **progress,
        "order": torch.from_numpy(np.asarray(progress["order"])),
    }
    checkpoints.save_torch(state, progress["env_steps"], progress["train_seconds"])


def restore_checkpoint(
    checkpoints: Checkpoints,
    model: DRLIHPolicy,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    env: Any,
) -> dict[str, Any]:
    """Load the newest checkpoint into model, optimizer, RNGs and env; return its progress."""
    _, saved = checkpoints.load_torch(map_location="cpu")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    rng.bit_generator.state = saved["numpy_rng"]
    torch.set_rng_state(saved["torch_rng"])
    env.np_random.bit_generator.state = saved["env_rng"]
    env.set_code_bank(saved["code_bank"].numpy())
    progress = {key: saved[key] for key in ("update", "env_steps", "train_seconds", "cursor")}
    return {**progress, "order": saved["order"].numpy()}


def load_model(folder: Path, device: str = "auto") -> DRLIHPolicy:
    """The trained policy of a run folder."""
    checkpoint = read_tensors(Path(folder) / MODEL_FILE, map_location=resolve_device(device))
    model = DRLIHPolicy(**checkpoint["config"]).to(resolve_device(device))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model


def make_env(dataset: HashingDataset, bits: int, group: int = 1) -> gym.Env:
    """The training environment of a run, for inspection or further training."""
    return gym.make(ENV_ID, dataset=dataset, bits=bits, group=group)
