"""Guided DQN on BinaryCodeTravel-v0 (DRLH), torch-native over the batched env (``agents.train dqn``).

What follows DRLH (section 4.2): a deep Q-network on the state (features, code, flip history),
replay memory, and epsilon-greedy exploration whose exploratory actions come from a teacher
("guided exploration ... based on the demonstrations made by an expert"), epsilon decaying
linearly from 1.0 to 0.1 over the first 60% of training (DRLH: over 15 of 25 epochs) and then
fixed. The test phase encodes from random start codes in at most M = b steps (``encode_batch``).

What is ours, each measured on digits (``benchmarks/RESULTS.md``, issue #15):

- the teacher's rule (the env's ``expert_action``: the most rewarding wrong bit, terminate on the
  class codeword);
- the bit-flip Q-network head (``agents.q_networks``): the largest single gain;
- a teacher margin loss (DQfD's large-margin loss, Hester et al. 2018, over the teacher's set of
  right actions in every replayed state; ``--teacher-margin-weight``);
- Double DQN targets, Adam instead of the paper's SGD (faster and less sensitive to the step size
  on this small network), Huber loss, gradient norm clipped at 10, a target copy every
  ``target_update_interval`` updates, gamma 0.95 (the paper gives none);
- the budget: ``max(40, 2 x bits)`` environment steps per train item (``--steps-per-item``), which
  keeps about as many episodes per item at every code length.

The loop stays on one torch device (CPU by default, or ``--device cuda``): ``num_envs`` sub-envs of
``hashing_gym.envs.binary_code_travel_vector.BinaryCodeTravelVectorEnv`` (torch backend), a replay
buffer of device tensors, and no host round trip per step: acting, storing and sampling are array
operations, and the host only reads numbers at evaluations and checkpoints.

The replay buffer stores each transition's item index (features are gathered from the split's
feature table when sampled), code and history before and after the step, action, reward,
termination and the teacher's right actions. Gymnasium's NEXT_STEP autoreset makes every
sub-env's step after an episode end a reset, not a transition: those rows are stored with
``valid=False`` and weigh nothing in the loss (storing them keeps every shape fixed, so nothing
waits for the GPU). Truncated transitions bootstrap from their next state; terminated ones do not.
Each vector step adds ``num_envs`` transitions and then takes ``gradient_steps`` updates of
``batch_size`` (16 replays per transition with the defaults). For large data sets on a GPU, more
of everything: ``--num-envs 512 --batch-size 2048 --gradient-steps 16``.

After training, ``results.json`` is written as by every trainer, with the evaluation curve
(``curve``: env steps, seconds, mAP, teacher agreement) added. Checkpoints
(``checkpoints/step_N.pt`` and ``state.json``) hold the whole training state: the networks, the
optimiser, the replay buffer's stored rows, every random stream (the env's included), the env's
episodes and the counters, so a run stopped at any point (Ctrl-C ends the current vector step
first; SIGKILL loses the steps since the last checkpoint) and resumed with ``--resume`` ends
bitwise equal to the same run uninterrupted on the CPU. A checkpoint's size grows with the
buffer's rows (about 0.4 KB a row at 16 bits).

The same algorithm on stable-baselines3's DQN, for SB3 users, is ``python -m agents.train dqn-sb3``
(``agents.dqn``: the bit-flip head and the teacher, without the margin loss and Double DQN).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents.checkpoint import CheckpointError, Checkpoints, read_tensors, write_json, write_tensors
from agents.common import (
    RESULTS_FILE,
    CommonArgs,
    InterruptRequest,
    TrainingLog,
    UsageError,
    announce_run,
    check_common_args,
    evaluate_encoder,
    load_run_dataset,
    open_run,
    parse_hidden,
    releases_run_lock,
    resolve_device,
    results_record,
    set_threads,
)
from agents.q_networks import HEADS, QNetwork
from agents.report import finish_run
from agents.resume_state import env_snapshot, require_keys, restore_env, upgrade_legacy_env
from hashing_gym.envs import encode_batch
from hashing_gym.envs.binary_code_travel_vector import BinaryCodeTravelVectorEnv

ALGO = "dqn-torch"
RESULTS_ALGO = "dqn"  # results.json names the algorithm, not the implementation
MODEL_FILE = "model.pt"
# What a checkpoint must hold to resume exactly (older ones lack the replay buffer, RNG and env state).
STATE_KEYS: tuple[str, ...] = (
    "q_network", "target_network", "optimizer", "replay", "generator", "torch_rng", "env",
    "obs", "info", "ended", "losses", "loss_count", "env_steps", "updates", "train_seconds", "curve",
)  # fmt: skip


@dataclass
class Args(CommonArgs):
    """Guided DQN on BinaryCodeTravel-v0, torch-native over the batched env (CPU or CUDA)."""

    steps_per_item: int | None = field(
        default=None,
        metadata={
            "help": "default budget: timesteps = steps_per_item x train items; None: max(40, 2 x bits), so "
            "every code length gets about as many episodes per item (an episode lasts up to bits + 1 steps)"
        },
    )
    num_envs: int = field(default=64, metadata={"help": "sub-envs stepped together on the device"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    buffer_size: int = field(
        default=200_000, metadata={"help": "replay buffer transitions (on the device)"}
    )
    learning_starts: int = field(default=2_000, metadata={"help": "env steps before the first update"})
    batch_size: int = field(default=256, metadata={"help": "replay minibatch size"})
    gradient_steps: int = field(default=4, metadata={"help": "updates after each vector step"})
    gamma: float = field(default=0.95, metadata={"help": "discount: each step costs the agent"})
    target_update_interval: int = field(default=500, metadata={"help": "updates between target copies"})
    teacher_margin_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight of the teacher margin loss (0: off): the best of the teacher's actions must beat "
            "every other action by --teacher-margin (DQfD's large-margin loss over the teacher's set, ours)"
        },
    )
    teacher_margin: float = field(default=0.8, metadata={"help": "margin of the teacher margin loss"})
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
    double_q: bool = field(
        default=True, metadata={"help": "Double DQN targets: the online network picks, the target values"}
    )
    checkpoint_every: int = field(default=1_000_000, metadata={"help": "env steps between checkpoints"})
    eval_every: int = field(
        default=100_000, metadata={"help": "env steps between retrieval evaluations (0: at the end only)"}
    )


class ReplayBuffer:
    """A ring buffer of transitions, all tensors on one device; rows are written a batch at a time."""

    def __init__(self, capacity: int, bits: int, history: int, device: torch.device) -> None:
        def zeros(*shape: int, dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros((capacity, *shape), dtype=dtype, device=device)

        self.capacity, self.size, self.position = capacity, 0, 0
        self.index = zeros(dtype=torch.int64)
        self.code = zeros(bits, dtype=torch.int8)
        self.history = zeros(history, bits, dtype=torch.int8)
        self.next_code = zeros(bits, dtype=torch.int8)
        self.next_history = zeros(history, bits, dtype=torch.int8)
        self.action = zeros(dtype=torch.int64)
        self.reward = zeros(dtype=torch.float32)
        self.terminated = zeros(dtype=torch.bool)
        self.valid = zeros(dtype=torch.bool)
        self.teacher = zeros(bits + 1, dtype=torch.bool)
        self._fields = (
            "index", "code", "history", "next_code", "next_history", "action", "reward", "terminated",
            "valid", "teacher",
        )  # fmt: skip

    def add(self, **batch: torch.Tensor) -> None:
        """Write one row per sub-env (keyword per field), overwriting the oldest rows."""
        n = len(batch["index"])
        rows = (torch.arange(n, device=self.index.device) + self.position) % self.capacity
        for name in self._fields:
            getattr(self, name).index_copy_(0, rows, batch[name])
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def state_dict(self) -> dict[str, Any]:
        """The stored rows (copies of the first ``size``, not the empty capacity) and the write position."""
        rows = {name: getattr(self, name)[: self.size].clone() for name in self._fields}
        return {"size": self.size, "position": self.position, "rows": rows}

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "checkpoint") -> None:
        """Restore the rows and position of :meth:`state_dict` (a buffer of the same shape).

        Raises:
            CheckpointError: naming ``source`` if the rows do not fit this buffer.
        """
        size, position, rows = int(state["size"]), int(state["position"]), state["rows"]
        fits = 0 <= size <= self.capacity and 0 <= position < self.capacity and set(rows) == set(self._fields)
        if not fits:
            raise CheckpointError(f"{source}: the replay buffer does not fit one of capacity {self.capacity}")
        for name in self._fields:
            column, saved = getattr(self, name), rows[name]
            if saved.shape != (size, *column.shape[1:]) or saved.dtype != column.dtype:
                raise CheckpointError(
                    f"{source}: replay field {name!r} is {saved.dtype} {tuple(saved.shape)}, "
                    f"expected {column.dtype} {(size, *column.shape[1:])}"
                )
            column[:size] = saved.to(column.device)
        self.size, self.position = size, position

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` rows drawn uniformly with replacement."""
        rows = torch.randint(self.size, (batch_size,), generator=generator, device=self.index.device)
        # index_select, not tensor[rows]: torch's advanced-indexing gather is slow on the GPU.
        return {name: torch.index_select(getattr(self, name), 0, rows) for name in self._fields}


def epsilon(args: Args, step: int, total: int) -> float:
    """Teacher probability at env step ``step`` of ``total`` (linear decay, then flat)."""
    progress = min(1.0, step / max(1.0, args.exploration_fraction * total))
    return args.exploration_initial_eps + progress * (
        args.exploration_final_eps - args.exploration_initial_eps
    )


def act(
    q_network: QNetwork,
    obs: dict[str, torch.Tensor],
    info: dict[str, torch.Tensor],
    eps: float,
    generator: Any,
) -> torch.Tensor:
    """DRLH's guided exploration: the teacher's action with probability ``eps``, else the greedy one."""
    with torch.no_grad():
        greedy = q_network(obs["features"], obs["code"], obs["history"]).argmax(1)
    explore = torch.rand(len(greedy), generator=generator, device=greedy.device) < eps
    return torch.where(explore, info["expert_action"], greedy)


def teacher_agreement(
    q_network: QNetwork, obs: dict[str, torch.Tensor], envs: BinaryCodeTravelVectorEnv
) -> float:
    """Share of the sub-envs' current states where the greedy action is one the teacher counts right."""
    with torch.no_grad():
        greedy = q_network(obs["features"], obs["code"], obs["history"]).argmax(1)
    return float(envs.teacher_actions().gather(1, greedy[:, None]).float().mean())


def encode_split(model: QNetwork, features: np.ndarray, bits: int) -> np.ndarray:
    """Codes under the greedy policy (DRLH's test phase: random start codes, at most ``bits`` steps)."""
    device = next(model.parameters()).device
    history = model.config["history"]

    @torch.no_grad()
    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        q = model(
            torch.as_tensor(obs["features"], device=device),
            torch.as_tensor(obs["code"], device=device),
            torch.as_tensor(obs["history"], device=device),
        )
        return q.argmax(1).cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        return encode_batch(policy, features, bits, history=history)
    finally:
        model.train(was_training)


def default_timesteps(args: Args, train_items: int) -> int:
    """The budget that scales with the data and the code length (``--steps-per-item``)."""
    per_item = args.steps_per_item if args.steps_per_item is not None else max(40, 2 * args.bits)
    return per_item * train_items


def check_args(args: Args) -> list[int]:
    """Refuse bad arguments with a one-line message; return the hidden layer sizes."""
    if args.env != "BinaryCodeTravel-v0":
        raise UsageError(f"dqn trains BinaryCodeTravel-v0 (a Discrete action), got --env {args.env}")
    check_common_args(
        args,
        positive=(
            "num_envs", "batch_size", "buffer_size", "gradient_steps", "target_update_interval",
            "steps_per_item", "checkpoint_every",
        ),
        non_negative=("learning_starts", "teacher_margin_weight", "teacher_margin"),
    )  # fmt: skip
    if args.buffer_size < args.num_envs:
        raise UsageError(f"--buffer-size {args.buffer_size} must hold one step of --num-envs {args.num_envs}")
    if args.head not in HEADS:
        raise UsageError(f"--head must be one of {', '.join(HEADS)}, got {args.head!r}")
    return parse_hidden(args.hidden)


@releases_run_lock
def main(args: Args) -> dict[str, Any]:
    """Train, encode, evaluate; write model.pt and results.json into the run folder."""
    hidden = check_args(args)
    set_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    if device.type == "cuda":
        # TF32 matrix products: the Q-network is small and noisy targets dwarf the rounding.
        torch.set_float32_matmul_precision("high")
    dataset = load_run_dataset(args)
    folder = open_run(args, ALGO)
    total = args.timesteps if args.timesteps is not None else default_timesteps(args, dataset.train.n)
    per_item = "" if args.timesteps is not None else f" ({total // dataset.train.n} per train item)"
    announce_run(folder, ALGO, args, dataset, str(device), f"{total:,} env steps{per_item}")
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)

    # ENV SETUP: the train split, random start codes, DRLH's reward; all sub-envs on the device.
    envs = BinaryCodeTravelVectorEnv(
        num_envs=args.num_envs, dataset=dataset, bits=args.bits, device=device, check_actions=False
    )
    features = torch.as_tensor(np.array(envs.single_env.features), device=device)
    q_network = QNetwork(envs.feature_dim, args.bits, envs.history_length, hidden, args.head).to(device)
    target_network = QNetwork(envs.feature_dim, args.bits, envs.history_length, hidden, args.head).to(device)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(
        q_network.parameters(), lr=args.learning_rate, **({"fused": True} if device.type == "cuda" else {})
    )
    replay = ReplayBuffer(args.buffer_size, args.bits, envs.history_length, device)
    obs, info = envs.reset(seed=args.seed)
    ended = torch.zeros(args.num_envs, dtype=torch.bool, device=device)  # NEXT_STEP: next row is a reset
    env_steps, updates, elapsed, curve = 0, 0, 0.0, []
    losses, loss_count = torch.zeros((), device=device), 0  # TD loss summed since the last evaluation
    checkpoints = Checkpoints(folder, ALGO)

    def training_state(seconds: float) -> dict[str, Any]:
        """Everything that changes while training, so that --resume continues exactly (the env too)."""
        return {
            "q_network": q_network.state_dict(),
            "target_network": target_network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "replay": replay.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "env": env_snapshot(envs),  # the episodes in progress and the env's random streams
            "obs": obs,
            "info": info,
            "ended": ended,
            "losses": losses,
            "loss_count": loss_count,
            "env_steps": env_steps,
            "updates": updates,
            "train_seconds": seconds,
            "curve": curve,
            "config": q_network.config,
        }

    if args.resume:
        checkpoint, saved = checkpoints.load_torch(map_location=device)
        source = checkpoints.directory / checkpoint.model
        upgrade_legacy_env(envs, saved, source)  # a checkpoint written before the envs had snapshots
        require_keys(saved, STATE_KEYS, source)
        q_network.load_state_dict(saved["q_network"])
        target_network.load_state_dict(saved["target_network"])
        optimizer.load_state_dict(saved["optimizer"])
        replay.load_state_dict(saved["replay"], source)
        generator.set_state(saved["generator"].cpu())  # RNG states are CPU tensors, whatever the device
        torch.set_rng_state(saved["torch_rng"].cpu())
        restore_env(envs, saved["env"], source)
        obs, info, ended = saved["obs"], saved["info"], saved["ended"]
        losses, loss_count = saved["losses"], saved["loss_count"]
        env_steps, updates, elapsed, curve = (
            saved["env_steps"], saved["updates"], saved["train_seconds"], saved["curve"]
        )  # fmt: skip
    log = TrainingLog(folder, ALGO, total, start_step=env_steps)
    # LOGGING: sums since the last training point, on the device (read only when a point is written).
    log_loss, log_updates = torch.zeros((), device=device), 0
    episode_returns = torch.zeros(args.num_envs, device=device)
    ended_sum, ended_count = torch.zeros((), device=device), torch.zeros((), device=device)
    # A resumed process saw only the end of the episodes under way: they are counted from the next ones.
    counted = torch.full((args.num_envs,), not args.resume, dtype=torch.bool, device=device)

    def evaluate() -> dict[str, float]:
        return evaluate_encoder(encode_split, q_network, dataset, args.bits, args.topk)

    if args.eval_every and env_steps == 0:  # the untrained network: where the mAP curve starts
        with log.paused():
            log.eval(evaluate(), 0)

    def checkpoint(seconds: float) -> None:
        checkpoints.save_torch(training_state(seconds), env_steps, seconds)

    next_eval = (env_steps // args.eval_every + 1) * args.eval_every if args.eval_every else None
    next_checkpoint = (env_steps // args.checkpoint_every + 1) * args.checkpoint_every
    start = time.perf_counter()
    # Ctrl-C ends the current vector step, then writes a checkpoint of it: --resume continues exactly.
    with InterruptRequest() as stop:
        while env_steps < total:
            # ALGO LOGIC: teacher-guided epsilon-greedy; the executed action goes into the buffer.
            exploration = epsilon(args, env_steps, total)
            actions = act(q_network, obs, info, exploration, generator)
            teacher = envs.teacher_actions()  # the state's right actions, for the teacher margin loss
            next_obs, reward, terminated, truncated, next_info = envs.step(actions)
            replay.add(
                index=info["index"],
                code=obs["code"],
                history=obs["history"],
                next_code=next_obs["code"],
                next_history=next_obs["history"],
                action=actions,
                reward=reward.float(),
                terminated=terminated,
                valid=~ended,
                teacher=teacher,
            )
            # LOGGING: episode returns (a row after an episode end is a reset, not a step).
            episode_returns += reward.float() * (~ended).float()
            finished = (terminated | truncated) & ~ended
            ended_sum += (episode_returns * (finished & counted).float()).sum()
            ended_count += (finished & counted).sum()
            counted |= finished
            episode_returns.masked_fill_(finished, 0.0)
            ended = terminated | truncated
            obs, info = next_obs, next_info
            env_steps += args.num_envs

            # ALGO LOGIC: Q-learning updates on uniform replay minibatches.
            if env_steps >= args.learning_starts and replay.size >= args.batch_size:
                for _ in range(args.gradient_steps):
                    loss = _update(q_network, target_network, optimizer, replay, features, args, generator)
                    losses += loss
                    log_loss += loss
                    updates, loss_count, log_updates = updates + 1, loss_count + 1, log_updates + 1
                    if updates % args.target_update_interval == 0:
                        target_network.load_state_dict(q_network.state_dict())

            seconds = elapsed + time.perf_counter() - start
            if next_eval is not None and env_steps >= next_eval:
                next_eval += args.eval_every
                with log.paused():
                    metrics = evaluate()
                    agreement = teacher_agreement(q_network, obs, envs)
                curve.append(
                    {
                        "env_steps": env_steps,
                        "seconds": round(seconds, 3),
                        "map": metrics["map"],
                        "teacher_agreement": agreement,
                        "td_loss": losses.item() / max(1, loss_count),
                    }
                )
                print(
                    f"env_steps={env_steps} seconds={seconds:.1f} map={metrics['map']:.4f} "
                    f"teacher_agreement={agreement:.4f}",
                    flush=True,
                )
                log.eval(metrics, env_steps, **{"eval/teacher_agreement": agreement})
                losses.zero_()
                loss_count = 0
            if log.due(env_steps) or env_steps >= total:
                count = int(ended_count.item())
                log.train(
                    env_steps,
                    episode_return=ended_sum.item() / count if count else None,
                    loss=log_loss.item() / log_updates if log_updates else None,
                    **{"rollout/exploration_rate": exploration},
                )
                ended_sum.zero_()
                ended_count.zero_()
                log_loss.zero_()
                log_updates = 0
            due = env_steps >= next_checkpoint
            if due:
                next_checkpoint += args.checkpoint_every
            if due or stop.requested:
                checkpoint(seconds)
            if stop.requested:
                log.close()
                raise KeyboardInterrupt
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = elapsed + time.perf_counter() - start
    checkpoint(train_seconds)
    write_tensors(folder / MODEL_FILE, {"state_dict": q_network.state_dict(), "config": q_network.config})
    metrics = evaluate()
    if not curve or curve[-1]["env_steps"] != env_steps:  # else logged by the last evaluation already
        log.eval(metrics, env_steps)
    log.close()
    results = results_record(
        RESULTS_ALGO,
        args,
        metrics,
        train_seconds,
        env_steps,
        model_file=MODEL_FILE,
        trainer=ALGO,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        num_envs=args.num_envs,
        gradient_updates=updates,
        curve=curve,
    )
    write_json(folder / RESULTS_FILE, results)
    return finish_run(folder, results, dataset, lambda x: encode_split(q_network, x, args.bits))


def _update(
    q_network: QNetwork,
    target_network: QNetwork,
    optimizer: torch.optim.Optimizer,
    replay: ReplayBuffer,
    features: torch.Tensor,
    args: Args,
    generator: torch.Generator,
) -> torch.Tensor:
    """One gradient step of the Huber TD loss over valid rows; returns the loss (no host sync)."""
    batch = replay.sample(args.batch_size, generator)
    item_features = torch.index_select(features, 0, batch["index"])
    with torch.no_grad():
        next_all = target_network(item_features, batch["next_code"], batch["next_history"])
        if args.double_q:
            chosen = q_network(item_features, batch["next_code"], batch["next_history"]).argmax(1)
            next_q = next_all.gather(1, chosen[:, None])[:, 0]
        else:
            next_q = next_all.max(1).values
        target = batch["reward"] + args.gamma * (~batch["terminated"]).float() * next_q
    q_all = q_network(item_features, batch["code"], batch["history"])
    q = q_all.gather(1, batch["action"][:, None])[:, 0]
    valid = batch["valid"].float()
    per_row = F.smooth_l1_loss(q, target, reduction="none")
    if args.teacher_margin_weight:
        margin_loss = teacher_margin_loss(q_all, batch["teacher"], args.teacher_margin)
        per_row = per_row + args.teacher_margin_weight * margin_loss
    loss = (per_row * valid).sum() / valid.sum().clamp(min=1.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(q_network.parameters(), 10.0)
    optimizer.step()
    return loss.detach()


def teacher_margin_loss(q: torch.Tensor, teacher: torch.Tensor, margin: float) -> torch.Tensor:
    """Per row: ``max(0, max_{a not right} Q(s, a) + margin - max_{a right} Q(s, a))``.

    DQfD (Hester et al., 2018) adds a large-margin loss that lifts the demonstrator's action above
    every other by a margin. Our teacher knows a set of right actions in every state (any wrong bit
    while d_pos > 0, terminate at d_pos = 0: ``BinaryCodeTravelVectorEnv.teacher_actions``), so the
    loss lifts the best right action above the best other one, on every replayed state (ours).
    """
    lowest = torch.finfo(q.dtype).min
    best_right = q.masked_fill(~teacher, lowest).max(1).values
    best_other = q.masked_fill(teacher, lowest).max(1).values
    return F.relu(best_other + margin - best_right)


def load_model(folder: Path, device: str = "auto") -> QNetwork:
    """The trained Q-network of a run folder."""
    saved = read_tensors(Path(folder) / MODEL_FILE, map_location=resolve_device(device))
    # Runs from before the bit-flip head have no "head" in their config: theirs was the plain MLP.
    model = QNetwork(**{"head": "mlp", **saved["config"]})
    model.load_state_dict(saved["state_dict"])
    return model.to(resolve_device(device))
