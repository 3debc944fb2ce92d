r"""REINFORCE on RankListHash-v0, torch-native over the batched env: the loop stays on one device.

The same MDP and algorithm as ``agents.reinforce`` (its query network, baselines, database network
and deterministic encoding, imported from there): a Bernoulli policy over codes trained by
:math:`\nabla J = E[(r - b) \nabla \log \pi(h | x)]`, the reward being the average precision of the
list the code induces against the database network's codes of the train split. What changes is
where the batch comes from: ``num_envs`` sub-envs of
``hashing_gym.envs.rank_list_hash_vector.RankListHashVectorEnv`` (torch backend) on the device,
with ``autoreset_mode="SameStep"`` so that every vector step acts. An update draws its items as
the CPU trainer does (``batch_size`` distinct items, unless the split is smaller; from their own
``torch.Generator`` on the device, apart from the codes') and takes ``batch_size / num_envs``
vector steps: each places ``num_envs`` of the items in the sub-envs, samples a code for each from
the policy, and the env returns their AP (XOR, popcount and per-distance histograms on the
device). The last update of a budget that is not a multiple of ``batch_size`` uses only the codes
the budget has left. Every ``--db-refresh K`` updates the database network takes the query
network's weights and re-encodes the split on the device, and the packed codes go straight into
the env's database.

No host round trip per step: the mean baseline, losses and rewards stay device tensors; the host
reads numbers only at evaluations (``--eval-every``, also recorded as ``curve`` in results.json),
checkpoints and the end.

Checkpoints hold the whole training state (networks, optimiser, baseline, the item and code
generators, the env's snapshot without its databases, the reward sums of the curve, the counters), so a run
stopped at any point (Ctrl-C ends the current update first; SIGKILL loses the updates since the
last checkpoint) and resumed with ``--resume`` ends bitwise equal to the same run uninterrupted on
the CPU. The database codes are not stored: the database network's weights re-encode them.

Differences from ``agents.reinforce``, all from the batching:

- the random streams are torch's on the device (items, codes), not numpy's, so the same seed gives
  another run than ``agents.reinforce`` (same initial weights);
- ``--db-refresh 0`` (the env's own bank of last sampled codes) is refused: each sub-env of the
  batched env keeps its own bank, which is another algorithm;
- ``--ties stable`` sorts each list on the host (the env's stable-order AP), a transfer per step.

Run: ``python -m agents.train reinforce --device cuda [--num-envs N]`` (``agents.train`` sends
``reinforce`` on a CUDA device here, ``--device auto`` included) or ``python -m agents.train
reinforce-torch --device cpu``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.checkpoint import Checkpoints, write_json
from agents.common import (
    RESULTS_FILE,
    InterruptRequest,
    TrainingLog,
    UsageError,
    announce_run,
    load_run_dataset,
    open_run,
    releases_run_lock,
    resolve_device,
    results_record,
    set_threads,
)
from agents.reinforce import (
    MODEL_FILE,
    QueryNetwork,
    check_args,
    default_timesteps,
    encode_split,
    evaluate_model,
    load_model,
    mlp,
    policy_gradient_loss,
    save_model,
)
from agents.reinforce import Args as ReinforceArgs
from agents.report import finish_run
from agents.resume_state import env_snapshot, require_keys, restore_env, upgrade_legacy_env
from hashing_gym.envs.rank_list_hash_vector import RankListHashVectorEnv

# load_model and encode_split are agents.reinforce's: agents.evaluate finds them here.
__all__ = [
    "Args", "act", "draw_items", "encode_on_device", "encode_split", "load_model", "main",
    "set_database_on_device",
]  # fmt: skip

ALGO = "reinforce-torch"
RESULTS_ALGO = "reinforce"  # results.json names the algorithm, not the implementation
ENCODE_CHUNK = 4096  # rows per forward pass when the database network encodes the split (as encode_split)
# What a checkpoint must hold to resume exactly (older ones lack the generators and reward sums).
STATE_KEYS: tuple[str, ...] = (
    "query_net", "database_net", "value_net", "optimizer", "running_mean", "generator", "item_generator",
    "env", "reward_sum", "reward_count", "update", "env_steps", "train_seconds", "curve",
)  # fmt: skip


@dataclass
class Args(ReinforceArgs):
    """Torch-native REINFORCE on the batched RankListHash-v0 (a CUDA device, or CPU for small runs)."""

    num_envs: int | None = field(
        default=None,
        metadata={
            "help": "sub-envs stepped together (codes per vector step); --batch-size must be a "
            "multiple; default: --batch-size"
        },
    )


def check_torch_args(args: Args) -> tuple[list[int], int]:
    """:func:`agents.reinforce.check_args`, plus the batched trainer's own; hidden sizes and num_envs."""
    hidden = check_args(args)
    num_envs = args.batch_size if args.num_envs is None else args.num_envs
    if num_envs <= 0:
        raise UsageError(f"--num-envs must be positive, got {num_envs}")
    if args.batch_size % num_envs:
        raise UsageError(f"--batch-size {args.batch_size} must be a multiple of --num-envs {num_envs}")
    if args.db_refresh == 0:
        raise UsageError(
            "--db-refresh 0 (the env's bank) is not supported by reinforce-torch: each sub-env of the "
            "batched env keeps its own bank; use --db-refresh K > 0 or the CPU trainer"
        )
    return hidden, num_envs


def encode_on_device(model: QueryNetwork, features: torch.Tensor) -> torch.Tensor:
    """Deterministic codes (bit = 1 where logit > 0) of device features; uint8 (n, bits) on the device.

    The codes of :func:`agents.reinforce.encode_split`, without the trip to the host.
    """
    with torch.no_grad():
        chunks = [
            model(features[start : start + ENCODE_CHUNK]) > 0
            for start in range(0, len(features), ENCODE_CHUNK)
        ]
    return torch.cat(chunks).to(torch.uint8)


def set_database_on_device(envs: RankListHashVectorEnv, codes: torch.Tensor) -> None:
    """Give every sub-env the database ``codes`` (0/1 (N, bits) on the device), unchecked on the host."""
    envs.set_device_database(codes)


def draw_items(num_items: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` items of the split as ``agents.reinforce`` draws a batch: distinct unless count > N."""
    device = generator.device
    if count > num_items:
        return torch.randint(num_items, (count,), generator=generator, device=device)
    return torch.randperm(num_items, generator=generator, device=device)[:count]


def act(
    query_net: QueryNetwork,
    envs: RankListHashVectorEnv,
    items: torch.Tensor,
    features: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One vector step: sub-env i gets item ``items[i]``, a code drawn from the policy, and its reward.

    The items go straight into the env's current items (what ``reset(options={"index": ...})``
    does, minus its validation on the host, which would read them back from the device); the
    env's same-step reset after the step draws items that the next call replaces.

    Args:
        query_net: the policy.
        envs: a torch-backend env with ``autoreset_mode="SameStep"``.
        items: int64 (num_envs,) rows of the split, on the env's device.
        features: the split's feature table on the device.
        generator: the code sampler's generator.

    Returns:
        ``(logits, codes, rewards)``: the policy's logits (with gradients), the sampled float 0/1
        codes and their float64 rewards (AP).
    """
    envs.set_device_items(items)
    logits = query_net(features.index_select(0, items))
    codes = torch.bernoulli(torch.sigmoid(logits).detach(), generator=generator)
    _, rewards, _, _, _ = envs.step(codes.to(torch.uint8))
    return logits, codes, rewards


@releases_run_lock
def main(args: Args) -> dict[str, Any]:
    """Train the query network on the device, encode, evaluate; write model.pt and results.json."""
    hidden, num_envs = check_torch_args(args)
    set_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    dataset = load_run_dataset(args)
    folder = open_run(args, ALGO)
    timesteps = args.timesteps if args.timesteps is not None else default_timesteps(args, dataset)

    # ENV SETUP: the train split, one database for all sub-envs (the database network's codes).
    envs = RankListHashVectorEnv(
        num_envs=num_envs,
        dataset=dataset,
        bits=args.bits,
        ties=args.ties,
        topk=args.reward_topk,
        database="fixed",
        device=device,
        backend="torch",
        autoreset_mode="SameStep",
        check_actions=False,  # Bernoulli draws are 0/1; the check would sync every step
    )
    features = torch.as_tensor(np.array(envs.single_env.features), device=device)

    # The networks' initial weights are agents.reinforce's for the same seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        query_net = QueryNetwork(envs.single_env.feature_dim, args.bits, hidden).to(device)
        value_net = mlp(envs.single_env.feature_dim, hidden, 1).to(device)  # the learned baseline V(x)
    database_net = copy.deepcopy(query_net).eval()
    parameters = list(query_net.parameters()) + (
        list(value_net.parameters()) if args.baseline == "learned" else []
    )
    optimizer = torch.optim.Adam(parameters, lr=args.learning_rate)
    # Two streams, as agents.reinforce: items and codes.
    generator = torch.Generator(device=device)  # sampled codes
    item_generator = torch.Generator(device=device)  # item batches

    def seed_streams(seed: int) -> None:
        generator.manual_seed(seed)
        item_generator.manual_seed(int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] >> 1))

    seed_streams(args.seed)
    running_mean: torch.Tensor | None = None  # the "mean" baseline, on the device
    update, env_steps, elapsed, curve = 0, 0, 0.0, []
    reward_sum = torch.zeros((), dtype=torch.float64, device=device)  # mean AP between evaluations
    reward_count = 0
    checkpoints = Checkpoints(folder, ALGO)
    envs.reset(seed=args.seed)  # a seeded reset draws random databases: the database network's replace them

    def refresh_database() -> None:
        # ALGO LOGIC: the database network becomes the query network and re-encodes the split.
        database_net.load_state_dict(query_net.state_dict())
        set_database_on_device(envs, encode_on_device(database_net, features))

    if args.resume:
        resumed, saved = checkpoints.load_torch(map_location=device)
        source = checkpoints.directory / resumed.model
        upgrade_legacy_env(envs, saved, source)  # a checkpoint written before the envs had snapshots
        require_keys(saved, STATE_KEYS, source)
        query_net.load_state_dict(saved["query_net"])
        database_net.load_state_dict(saved["database_net"])
        value_net.load_state_dict(saved["value_net"])
        optimizer.load_state_dict(saved["optimizer"])
        running_mean = saved["running_mean"]
        generator.set_state(saved["generator"].cpu())  # RNG states are CPU tensors, whatever the device
        item_generator.set_state(saved["item_generator"].cpu())
        restore_env(envs, saved["env"], source)  # its random streams; the database comes next
        reward_sum, reward_count = saved["reward_sum"], saved["reward_count"]
        update, env_steps, elapsed = saved["update"], saved["env_steps"], saved["train_seconds"]
        curve = saved["curve"]
        # The database codes are the database network's, deterministic: encoded again, not stored.
        set_database_on_device(envs, encode_on_device(database_net, features))
    else:
        refresh_database()

    def checkpoint(seconds: float) -> None:
        checkpoints.save_torch(
            {
                "query_net": query_net.state_dict(),
                "database_net": database_net.state_dict(),
                "value_net": value_net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "running_mean": running_mean,
                "generator": generator.get_state(),
                "item_generator": item_generator.get_state(),
                "env": env_snapshot(envs, banks=False),  # the databases: re-encoded on resume
                "reward_sum": reward_sum,
                "reward_count": reward_count,
                "update": update,
                "env_steps": env_steps,
                "train_seconds": seconds,
                "curve": curve,
            },
            env_steps,
            seconds,
        )

    announce_run(folder, ALGO, args, dataset, str(device), f"{timesteps:,} env steps (one code each)")
    log = TrainingLog(folder, ALGO, timesteps, start_step=env_steps)
    if args.eval_every and env_steps == 0:  # the untrained policy: where the mAP curve starts
        with log.paused():
            log.eval(evaluate_model(query_net, dataset, args.bits, args.topk), 0)
    # LOGGING: rewards (one-step episodes' returns) since the last training point, on the device.
    log_reward_sum, log_reward_count = torch.zeros((), dtype=torch.float64, device=device), 0
    losses: dict[str, torch.Tensor] = {}  # the last update's, logged with the training points
    evaluated: dict[int, dict[str, float]] = {}  # env steps -> metrics of the last evaluation

    def log_point(seconds: float) -> dict[str, float]:
        nonlocal reward_count
        if env_steps in evaluated:  # the last update was evaluated already
            return evaluated[env_steps]
        if curve and curve[-1]["env_steps"] == env_steps:  # ... by the process that wrote the checkpoint
            return evaluate_model(query_net, dataset, args.bits, args.topk)
        metrics = evaluate_model(query_net, dataset, args.bits, args.topk)
        mean_ap = float(reward_sum) / max(1, reward_count)
        point = {
            "env_steps": env_steps,
            "seconds": round(seconds, 3),
            "map": metrics["map"],
            "mean_ap": mean_ap,
        }
        curve.append(point)
        evaluated.clear()
        evaluated[env_steps] = metrics
        reward_sum.zero_()
        reward_count = 0
        log.eval(metrics, env_steps)
        return metrics

    start = time.perf_counter()
    with InterruptRequest() as stop:
        while env_steps < timesteps:
            # ALGO LOGIC: a batch of sampled codes and their rewards, gathered over vector steps.
            batch = min(args.batch_size, timesteps - env_steps)
            steps = math.ceil(batch / num_envs)
            items = draw_items(envs.num_items, steps * num_envs, item_generator)
            logits, codes, rewards = [], [], []
            for chunk in items.view(steps, num_envs):
                step_logits, step_codes, step_rewards = act(query_net, envs, chunk, features, generator)
                logits.append(step_logits)
                codes.append(step_codes)
                rewards.append(step_rewards)
            # The budget's last update keeps only the codes it has left.
            x = features.index_select(0, items[:batch])
            logits_b, codes_b, rewards_b = (torch.cat(t)[:batch] for t in (logits, codes, rewards))
            reward_sum += rewards_b.sum()
            reward_count += batch
            log_reward_sum += rewards_b.sum()
            log_reward_count += batch
            rewards_f = rewards_b.float()

            # ALGO LOGIC: policy gradient with a baseline (agents.reinforce's loss, the mean on the device).
            values = value_net(x).squeeze(1) if args.baseline == "learned" else None
            loss, policy_loss, entropy, value_loss, running_mean = policy_gradient_loss(
                logits_b, codes_b, rewards_f, rewards_f.mean(), values, running_mean, args
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            update += 1
            env_steps += batch
            losses.update(loss=loss.detach(), policy_loss=policy_loss.detach(), entropy=entropy.detach())
            if args.baseline == "learned":
                losses["value_loss"] = value_loss.detach()
            if update % args.db_refresh == 0:
                refresh_database()

            # LOGGING, evaluation and checkpoints, between updates: the only reads from the device.
            if log.due(env_steps) or env_steps >= timesteps:
                extra = {f"train/{name}": value.item() for name, value in losses.items() if name != "loss"}
                mean_reward = log_reward_sum.item() / log_reward_count
                log.train(env_steps, mean_reward, losses["loss"].item(), **extra)
                log_reward_sum.zero_()
                log_reward_count = 0
            if args.eval_every and update % args.eval_every == 0:
                with log.paused():
                    log_point(elapsed + time.perf_counter() - start)
            checkpoint_due = args.checkpoint_every and update % args.checkpoint_every == 0
            if checkpoint_due or stop.requested:
                checkpoint(elapsed + time.perf_counter() - start)
            if stop.requested:
                log.close()
                raise KeyboardInterrupt
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = elapsed + time.perf_counter() - start
    save_model(query_net, folder / MODEL_FILE)
    metrics = log_point(train_seconds)
    log.close()
    results = results_record(
        RESULTS_ALGO,
        args,
        metrics,
        train_seconds,
        env_steps,
        model_file=MODEL_FILE,
        trainer=ALGO,
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        num_envs=num_envs,
        updates=update,
        curve=curve,
    )
    write_json(folder / RESULTS_FILE, results)
    return finish_run(folder, results, dataset, lambda x: encode_split(query_net, x, args.bits))
