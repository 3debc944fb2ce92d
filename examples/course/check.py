"""Grade a course exercise against the package: ``python -m examples.course.check N path/to/solution.py``.

Each exercise is graded by behaviour, never by reading the code: the student's reward is compared with the
environment's rewards on random episodes, the teacher's actions with what they do to ``d_pos``, the AP
functions with ``hashing_gym.ranking``, and the learning agents are trained with the student's own ``train``
and their codes ranked with ``hashing_gym.ranking``. The report lists one line per check; the exit status
is 0 when every check passes, 1 when one fails, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import inspect
import itertools
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers the environments
from hashing_gym.data import load_dataset
from hashing_gym.envs.base import label_mask
from hashing_gym.ranking import (
    average_precision,
    average_precision_from_counts,
    distance_counts,
    mean_average_precision,
    rank,
)

TOLERANCE = 1e-9
# Exercise 4's environment (the starter's make_env builds the same): 4 bits over 4 Gaussian classes.
Q_LEARNING_BITS = 4
Q_LEARNING_BLOBS = {"num_classes": 4, "n_per_class": 200, "dim": 16, "seed": 0}
Q_LEARNING_EPISODES = 5000
Q_LEARNING_MIN_MAP = 0.75
REINFORCE_STEPS = 15000
REINFORCE_MIN_MAP = 0.6
TEACHER_MIN_MAP = 0.95
TRAIN_SECONDS = 300  # a student's train() that runs longer is stopped (the references take seconds)


class Report:
    """Collects PASS/FAIL lines as the checks run and prints them at once."""

    def __init__(self) -> None:
        self.lines: list[tuple[bool, str, str]] = []

    def add(self, passed: bool, name: str, detail: str = "") -> bool:
        """Record one check; returns ``passed``."""
        self.lines.append((passed, name, detail))
        print(f"{'PASS' if passed else 'FAIL'}  {name}" + (f": {detail}" if detail else ""), flush=True)
        return passed

    def skip(self, name: str, reason: str) -> None:
        """Record a check that could not run because an earlier one failed (it counts as failed)."""
        self.add(False, name, f"skipped ({reason})")

    @property
    def passed(self) -> bool:
        """Whether every check passed (and there was at least one)."""
        return bool(self.lines) and all(passed for passed, _, _ in self.lines)


def run_check(report: Report, name: str, check: Callable[[], str]) -> bool:
    """Run ``check`` (returns a detail string, raises ``AssertionError`` on a wrong answer) and record it."""
    try:
        detail = check()
    except NotImplementedError as error:
        return report.add(
            False, name, f"not implemented yet ({error})" if str(error) else "not implemented yet"
        )
    except AssertionError as error:
        return report.add(False, name, str(error))
    except Exception as error:  # a student's bug is a failed check, not a crash of the grader
        where = traceback.extract_tb(error.__traceback__)[-1]
        return report.add(
            False, name, f"{type(error).__name__}: {error} (at {Path(where.filename).name}:{where.lineno})"
        )
    return report.add(True, name, detail)


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise ``TimeoutError`` in the block after ``seconds`` (where SIGALRM exists; elsewhere no limit)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} took over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class InputGuard:
    """A solution module whose every function call is checked not to change the arrays it is given.

    A function that flips ``code`` in place may still return the right number, and the checker, which
    passes copies, would not see it; a user calling it on an env's observation would. Arrays given
    directly, or as values of a dict argument (an observation), are compared before and after the call.
    ``MAY_UPDATE`` names the arguments an exercise asks to update in place.
    """

    MAY_UPDATE: dict[str, set[str]] = {"q_learning_update": {"weights"}}

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if not inspect.isfunction(value):
            return value

        @functools.wraps(value)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = inspect.signature(value).bind(*args, **kwargs)
            except TypeError:  # a wrong call: let the function itself raise
                return value(*args, **kwargs)
            before = {
                (arg, key): array.copy()
                for arg, given in bound.arguments.items()
                if arg not in self.MAY_UPDATE.get(name, set())
                for key, array in _arrays_of(given)
            }
            result = value(*args, **kwargs)
            for (arg, key), copy in before.items():
                now = dict(_arrays_of(bound.arguments[arg]))[key]
                if now.shape != copy.shape or not np.array_equal(now, copy, equal_nan=True):
                    where = f"{arg}[{key!r}]" if key is not None else arg
                    raise AssertionError(
                        f"{name}() changed its argument {where} in place; work on a copy "
                        "(np.array(x, copy=True)), since the caller's array may be an env's own state"
                    )
            return result

        return guarded


def _arrays_of(value: Any) -> list[tuple[Any, np.ndarray]]:
    """The numpy arrays of an argument: itself, or a dict's array values (by key)."""
    if isinstance(value, np.ndarray):
        return [(None, value)]
    if isinstance(value, dict):
        return [(key, item) for key, item in value.items() if isinstance(item, np.ndarray)]
    return []


def close(student: float, expected: float) -> bool:
    """Whether two numbers agree to ``TOLERANCE`` (student values may be numpy scalars)."""
    return abs(float(student) - float(expected)) <= TOLERANCE


def positive_classes(env: gym.Env, index: int) -> np.ndarray:
    """Boolean (C,): the classes of item ``index`` of the env's split."""
    core = env.unwrapped
    return label_mask(core.split, core.dataset.num_classes)[index]


def reward_envs() -> list[tuple[str, gym.Env]]:
    """A single-label and a multi-label BinaryCodeTravel-v0 (multi-label: d_pos is the nearest class)."""
    multi = load_dataset("blobs", num_classes=6, n_per_class=20, dim=8, multi_label=True, query_per_class=2)
    return [
        ("digits, 16 bits", gym.make("BinaryCodeTravel-v0", bits=16)),
        ("multi-label blobs, 12 bits", gym.make("BinaryCodeTravel-v0", dataset=multi, bits=12)),
    ]


# ---------------------------------------------------------------------------------------------------------
# Exercise 1: DRLH's reward


def check_reward(solution: ModuleType, report: Report) -> None:
    """Exercise 1: Eq. 1 and Eq. 2 against the env's rewards, and the telescoping sum."""
    envs = reward_envs()

    def rewards_match() -> str:
        steps = boundary = 0
        for label, env in envs:
            core = env.unwrapped
            rng = np.random.default_rng(1)
            for episode in range(40):
                obs, info = env.reset(seed=episode)
                positive = positive_classes(env, info["index"])
                done = False
                while not done:
                    # The env's teacher walks to the ball's edge (d_pos = eta, where `<` and `<=` differ)
                    # and terminates there; random flips and terminations cover the other states.
                    draw = rng.random()
                    if draw < 0.4:
                        action = int(info["expert_action"])
                    else:
                        action = core.bits if draw < 0.5 else int(rng.integers(core.bits))
                    code = obs["code"].copy()
                    if action == core.bits:
                        boundary += info["d_pos"] == core.eta
                        expected_name = "terminate_reward"
                        student = solution.terminate_reward(
                            code, core.codebook, positive, core.eta, core.sigma
                        )
                    else:
                        expected_name = "flip_reward"
                        student = solution.flip_reward(code, action, core.codebook, positive)
                    obs, reward, terminated, truncated, info = env.step(action)
                    assert close(student, reward), (
                        f"{label}: {expected_name} gives {float(student):.6f} but the env rewards "
                        f"{reward:.6f} (code {code.tolist()}, action {action}, item {info['index']})"
                    )
                    steps += 1
                    done = terminated or truncated
        assert boundary, "no termination at d_pos = eta was tested (report a bug in the checker)"
        return f"{steps} steps agree with the env ({boundary} terminations at d_pos = eta)"

    def margin_matches_info() -> str:
        for label, env in envs:
            for episode in range(20):
                obs, info = env.reset(seed=100 + episode)
                positive = positive_classes(env, info["index"])
                student = solution.margin(obs["code"], env.unwrapped.codebook, positive)
                expected = info["d_pos"] - info["d_neg"]
                assert close(student, expected), (
                    f"{label}: margin gives {float(student):.6f}, the env's d_pos - d_neg is {expected:.6f}"
                )
        # An item of every class has no negative classes: d_neg = 0 (a mean over none would be nan).
        codebook = envs[1][1].unwrapped.codebook
        every = np.ones(len(codebook), dtype=bool)
        for code in np.random.default_rng(3).integers(0, 2, size=(10, codebook.shape[1])):
            expected = float((codebook != code).sum(axis=1).min())
            student = solution.margin(code, codebook, every)
            assert close(student, expected), (
                f"margin of an item that carries every class gives {float(student)}; with no other "
                f"class d_neg = 0, so it is d_pos = {expected:g}"
            )
        return "margin = info['d_pos'] - info['d_neg'] on 40 start codes and 10 items of every class"

    def telescopes() -> str:
        rng = np.random.default_rng(2)
        for label, env in envs:
            core = env.unwrapped
            for episode in range(20):
                obs, info = env.reset(seed=200 + episode)
                start, positive = obs["code"].copy(), positive_classes(env, info["index"])
                flips = rng.integers(core.bits, size=core.max_steps - 1)
                total = 0.0
                for bit in flips:
                    obs, reward, *_ = env.step(int(bit))
                    total += reward
                end = obs["code"].copy()
                student = solution.episode_flip_return(start, end, core.codebook, positive)
                assert close(student, total), (
                    f"{label}: episode_flip_return gives {float(student):.6f}; the env's flip rewards from "
                    f"{start.tolist()} to {end.tolist()} sum to {total:.6f}"
                )
                # The same flips in another order reach the same end: the env's sum must not change either.
                env.reset(seed=200 + episode)
                reordered = sum(env.step(int(bit))[1] for bit in rng.permutation(flips))
                assert close(reordered, total), "the env's flip rewards depend on the path (report a bug)"
        return "the env's flip rewards sum to the closed form, on any path between the same codes"

    run_check(report, "1a margin d_pos - d_neg", margin_matches_info)
    run_check(report, "1b flip (Eq. 1) and terminate (Eq. 2) rewards", rewards_match)
    run_check(report, "1c the flip rewards telescope", telescopes)


# ---------------------------------------------------------------------------------------------------------
# Exercise 2: the teacher policy and its mAP


def check_teacher(solution: ModuleType, report: Report) -> None:
    """Exercise 2: the teacher's actions by their effect on d_pos; its codes and reported mAP."""

    def actions_are_the_teachers() -> str:
        checked = 0
        for label, env in reward_envs():
            core = env.unwrapped
            rng = np.random.default_rng(3)
            for episode in range(30):
                obs, info = env.reset(seed=episode)
                positive = positive_classes(env, info["index"])
                for _ in range(core.bits):
                    action = solution.teacher_action(obs["code"].copy(), core.codebook, positive, core.eta)
                    assert isinstance(action, (int, np.integer)) and 0 <= action <= core.bits, (
                        f"{label}: teacher_action returned {action!r}, not an action in 0..{core.bits}"
                    )
                    d_pos = info["d_pos"]
                    if d_pos <= core.eta:
                        assert action == core.bits, (
                            f"{label}: d_pos = {d_pos} <= eta = {core.eta} but the teacher flipped bit "
                            f"{action} instead of terminating"
                        )
                        break
                    assert action != core.bits, (
                        f"{label}: the teacher terminated at d_pos = {d_pos} > eta = {core.eta}"
                    )
                    obs, _, _, truncated, info = env.step(int(action))
                    assert info["d_pos"] == d_pos - 1, (
                        f"{label}: flipping bit {action} moved d_pos from {d_pos} to {info['d_pos']}; "
                        "a teacher's flip brings the code one bit closer to its nearest class codeword"
                    )
                    checked += 1
                    # A random flip now and then, so the teacher is also asked about states off its own path.
                    if not truncated and rng.random() < 0.3:
                        obs, _, _, truncated, info = env.step(int(rng.integers(core.bits)))
                    if truncated:
                        break
        return f"{checked} teacher flips each moved d_pos one step closer; it terminates exactly inside eta"

    teacher_ok = run_check(report, "2a teacher_action", actions_are_the_teachers)

    def codes_and_map() -> str:
        envs = {
            split: gym.make("BinaryCodeTravel-v0", bits=16, split=split, init="zeros")
            for split in ("query", "database")
        }
        codes = {split: np.asarray(solution.encode_split(env)) for split, env in envs.items()}
        dataset = envs["query"].unwrapped.dataset
        for split, env in envs.items():
            core = env.unwrapped
            assert codes[split].shape == (core.num_items, core.bits), (
                f"encode_split({split}) returned shape {codes[split].shape}, "
                f"expected {(core.num_items, core.bits)}"
            )
            mask = label_mask(core.split, dataset.num_classes)
            distances = (codes[split][:, None, :] != core.codebook[None]).sum(axis=2)
            d_pos = np.where(mask, distances, core.bits + 1).min(axis=1)
            far = np.flatnonzero(d_pos > core.eta)
            assert far.size == 0, (
                f"{far.size} {split} codes end farther than eta = {core.eta} from their class codeword "
                f"(first: item {far[0] if far.size else None})"
            )
        expected = mean_average_precision(
            codes["query"], dataset.query.labels, codes["database"], dataset.database.labels
        )
        reported = solution.teacher_map(16)
        assert close(reported, expected), (
            f"teacher_map(16) = {float(reported):.6f}, but hashing_gym.ranking gives {expected:.6f} for "
            "the codes of encode_split (query against database)"
        )
        assert expected >= TEACHER_MIN_MAP, f"the teacher's mAP {expected:.4f} is below {TEACHER_MIN_MAP}"
        return f"every code within eta of its class codeword; mAP@all = {expected:.4f}, as reported"

    if teacher_ok:
        run_check(report, "2b encode_split and teacher_map", codes_and_map)
    else:
        report.skip("2b encode_split and teacher_map", "fix teacher_action first")


# ---------------------------------------------------------------------------------------------------------
# Exercise 3: average precision from per-distance counts


def random_retrieval(seed: int, nq: int = 30, nb: int = 120, bits: int = 6, classes: int = 4) -> tuple:
    """Small random codes and labels (few bits: many ties)."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 2, size=(nq, bits), dtype=np.uint8),
        rng.integers(classes, size=nq),
        rng.integers(0, 2, size=(nb, bits), dtype=np.uint8),
        rng.integers(classes, size=nb),
    )


def check_average_precision(solution: ModuleType, report: Report) -> None:
    """Exercise 3: AP of a ranking and the tie-aware AP against ``hashing_gym.ranking``."""

    def plain_ap() -> str:
        xq, yq, xb, yb = random_retrieval(0)
        _, order = rank(xq, xb, topk=len(xb))  # ties by database index: the "stable" order
        expected = average_precision(xq, yq, xb, yb, ties="stable")
        for q in range(len(xq)):
            student = solution.average_precision((yb[order[q]] == yq[q]).astype(np.int64))
            assert close(student, expected[q]), (
                f"query {q}: average_precision gives {float(student):.6f}, "
                f"hashing_gym.ranking {expected[q]:.6f}"
            )
        for relevance, want in (([0, 0, 0], 0.0), ([1], 1.0), ([0, 1], 0.5), ([1, 0, 1], (1 + 2 / 3) / 2)):
            student = solution.average_precision(np.array(relevance))
            assert close(student, want), f"average_precision({relevance}) = {float(student)}, expected {want}"
        return (
            f"{len(xq)} rankings agree with hashing_gym.ranking (ties='stable'); empty and small lists right"
        )

    def tie_aware() -> str:
        checked = 0
        for seed in range(3):
            xq, yq, xb, yb = random_retrieval(10 + seed)
            counts, relevant = distance_counts(xq, yq, xb, yb)
            expected = average_precision(xq, yq, xb, yb, ties="average")
            for q in range(len(xq)):
                student = solution.tie_aware_ap(counts[q].copy(), relevant[q].copy())
                assert close(student, expected[q]), (
                    f"counts {counts[q].tolist()}, relevant {relevant[q].tolist()}: tie_aware_ap gives "
                    f"{float(student):.9f}, hashing_gym.ranking {expected[q]:.9f}"
                )
                checked += 1
        edge_cases = [
            ([1, 2, 1], [1, 1, 0]),  # the docstring example of average_precision_from_counts
            ([5, 0, 0], [0, 0, 0]),  # nothing relevant: AP 0
            ([0, 4, 0], [0, 4, 0]),  # all relevant, all tied: AP 1
            ([1, 0, 3], [0, 0, 1]),  # buckets of one item and empty buckets
            ([0, 1000, 1000], [0, 10, 990]),  # large buckets: no enumeration of orders
        ]
        for counts_row, relevant_row in edge_cases:
            expected = average_precision_from_counts(np.array([counts_row]), np.array([relevant_row]))[0]
            call = f"tie_aware_ap({counts_row}, {relevant_row})"
            with time_limit(5, f"{call} (compute it from the counts, without enumerating orders)"):
                student = solution.tie_aware_ap(np.array(counts_row), np.array(relevant_row))
            assert close(student, expected), (
                f"tie_aware_ap({counts_row}, {relevant_row}) = {float(student):.9f}, expected {expected:.9f}"
            )
        return (
            f"{checked} queries and {len(edge_cases)} edge cases agree with hashing_gym.ranking "
            "(ties='average')"
        )

    def expectation_over_orders() -> str:
        # Exhaustively: the tie-aware AP is the mean of the plain AP over all orders within the buckets.
        cases = [([1, 3, 2], [0, 2, 1]), ([2, 2], [1, 1]), ([0, 4, 1], [0, 1, 1])]
        for counts_row, relevant_row in cases:
            buckets = [[1] * r + [0] * (n - r) for n, r in zip(counts_row, relevant_row, strict=True)]
            orders = [list(set(itertools.permutations(bucket))) for bucket in buckets]
            values = [
                float(solution.average_precision(np.array([x for part in parts for x in part])))
                for parts in itertools.product(*orders)
            ]
            student = solution.tie_aware_ap(np.array(counts_row), np.array(relevant_row))
            assert close(student, np.mean(values)), (
                f"counts {counts_row}, relevant {relevant_row}: the mean AP over all {len(values)} orders "
                f"within ties is {np.mean(values):.9f}, tie_aware_ap gives {float(student):.9f}"
            )
        return "tie_aware_ap equals the mean of average_precision over every order within ties"

    plain_ok = run_check(report, "3a average_precision of a ranking", plain_ap)
    aware_ok = run_check(report, "3b tie_aware_ap from counts", tie_aware)
    if plain_ok and aware_ok:
        run_check(report, "3c tie-aware AP = expected AP over tie orders", expectation_over_orders)
    else:
        report.skip("3c tie-aware AP = expected AP over tie orders", "fix 3a and 3b first")


# ---------------------------------------------------------------------------------------------------------
# Exercise 4: linear Q-learning


def q_learning_env(split: str = "train", **kwargs: Any) -> gym.Env:
    """Exercise 4's environment: 4-bit BinaryCodeTravel-v0 over 4 Gaussian classes."""
    dataset = load_dataset("blobs", **Q_LEARNING_BLOBS)
    return gym.make("BinaryCodeTravel-v0", dataset=dataset, bits=Q_LEARNING_BITS, split=split, **kwargs)


def encode_greedily(act: Callable[[dict], int], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Codes of a split under a policy, from all-zero codes for at most ``bits`` steps (DRLH's test phase)."""
    env = q_learning_env(split, init="zeros", max_steps=Q_LEARNING_BITS)
    core = env.unwrapped
    codes = np.zeros((core.num_items, core.bits), dtype=np.uint8)
    for index in range(core.num_items):
        obs, _ = env.reset(options={"index": index})
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(int(act(obs)))
            done = terminated or truncated
        codes[index] = obs["code"]
    return codes, core.split.labels


def check_q_learning(solution: ModuleType, report: Report) -> None:
    """Exercise 4: the epsilon-greedy rule and the update by formula, then the learned policy's mAP."""
    rng = np.random.default_rng(4)

    def greedy_rule() -> str:
        q = np.array([0.5, -1.0, 2.0, 0.0, 1.0])
        picks = [solution.epsilon_greedy(q, 0.0, rng) for _ in range(50)]
        assert set(picks) == {2}, (
            f"epsilon_greedy(q, 0) must always pick argmax q = 2, picked {sorted(set(picks))}"
        )
        picks = np.array([solution.epsilon_greedy(q, 1.0, rng) for _ in range(5000)])
        frequencies = np.bincount(picks, minlength=len(q)) / len(picks)
        assert np.abs(frequencies - 1 / len(q)).max() < 0.05, (
            f"epsilon_greedy(q, 1) must pick uniformly, frequencies {frequencies.round(3).tolist()}"
        )
        picks = np.array([solution.epsilon_greedy(q, 0.5, rng) for _ in range(5000)])
        share = float(np.mean(picks == 2))
        assert abs(share - (0.5 + 0.5 / len(q))) < 0.05, (
            f"epsilon_greedy(q, 0.5) picks the greedy action {share:.3f} of the time, expected about 0.6"
        )
        return "greedy at epsilon 0, uniform at 1, 60% greedy at 0.5 (5 actions)"

    def update_rule() -> str:
        for terminated in (False, True):
            weights = rng.normal(size=(5, 7))
            x, x_next = rng.normal(size=7), rng.normal(size=7)
            action, reward, gamma, lr = 3, 0.7, 0.9, 0.05
            target = reward if terminated else reward + gamma * np.max(weights @ x_next)
            expected = weights.copy()
            expected[action] += lr * (target - weights[action] @ x) * x
            student = weights.copy()
            returned = solution.q_learning_update(student, x, action, reward, x_next, terminated, gamma, lr)
            if (
                returned is not None
            ):  # an implementation that returns new weights instead of updating in place
                student = np.asarray(returned)
            assert np.allclose(student, expected, rtol=0, atol=TOLERANCE), (
                f"q_learning_update (terminated={terminated}) differs from w_a += lr (target - w_a.x) x by "
                f"{np.abs(student - expected).max():.3g}"
            )
        return "semi-gradient update, bootstrapping unless terminated"

    greedy_ok = run_check(report, "4a epsilon_greedy", greedy_rule)
    update_ok = run_check(report, "4b q_learning_update", update_rule)

    def learns() -> str:
        started = time.perf_counter()
        with time_limit(TRAIN_SECONDS, "train"):
            weights = solution.train(q_learning_env(), Q_LEARNING_EPISODES, 0)
        seconds = time.perf_counter() - started
        query, query_labels = encode_greedily(lambda obs: solution.greedy_action(weights, obs), "query")
        database, database_labels = encode_greedily(
            lambda obs: solution.greedy_action(weights, obs), "database"
        )
        learned = mean_average_precision(query, query_labels, database, database_labels)
        random_rng = np.random.default_rng(0)
        random_codes = [
            encode_greedily(lambda obs: int(random_rng.integers(Q_LEARNING_BITS + 1)), split)
            for split in ("query", "database")
        ]
        chance = mean_average_precision(*random_codes[0], *random_codes[1])
        detail = f"mAP@all {learned:.3f} (random policy {chance:.3f}) after {seconds:.1f} s of training"
        assert learned >= Q_LEARNING_MIN_MAP, f"{detail}: needs >= {Q_LEARNING_MIN_MAP}"
        return detail

    name = f"4c the greedy policy's mAP after train(env, {Q_LEARNING_EPISODES}, seed=0)"
    if greedy_ok and update_ok:
        run_check(report, name, learns)
    else:
        report.skip(name, "fix 4a and 4b first")


# ---------------------------------------------------------------------------------------------------------
# Exercise 5: REINFORCE with a baseline


def bernoulli_log_prob(weights: np.ndarray, x: np.ndarray, code: np.ndarray) -> float:
    """The log-probability log pi(code | x) of the linear Bernoulli policy, from the logits."""
    logits = weights @ np.append(x, 1.0)
    return float(-np.logaddexp(0.0, np.where(code == 1, -logits, logits)).sum())


def check_reinforce(solution: ModuleType, report: Report) -> None:
    """Exercise 5: the policy and its gradient by formula and finite differences, then the trained mAP."""
    rng = np.random.default_rng(5)
    bits, dim = 6, 5
    weights = rng.normal(size=(bits, dim + 1))

    def policy() -> str:
        x = rng.normal(size=dim)
        p = np.asarray(solution.code_probabilities(weights, x))
        expected = 1.0 / (1.0 + np.exp(-(weights @ np.append(x, 1.0))))
        assert p.shape == (bits,) and np.allclose(p, expected, atol=TOLERANCE), (
            f"code_probabilities gives {np.round(p, 4).tolist()}, expected sigmoid(W [x, 1]) = "
            f"{np.round(expected, 4).tolist()}"
        )
        draws = np.array([solution.sample_code(p, rng) for _ in range(4000)])
        assert set(np.unique(draws).tolist()) <= {0, 1}, "sample_code must return 0/1 bits"
        assert np.abs(draws.mean(axis=0) - p).max() < 0.05, (
            f"sample_code's bit frequencies {draws.mean(axis=0).round(3).tolist()} do not follow p = "
            f"{p.round(3).tolist()}"
        )
        return "sigmoid probabilities; sampled bits follow them"

    def gradient() -> str:
        xs = rng.normal(size=(8, dim))
        codes = rng.integers(0, 2, size=(8, bits)).astype(np.int8)
        rewards = rng.random(8)
        baseline = 0.4
        # Finite differences of the mean advantage-weighted log-likelihood: the REINFORCE estimator.
        expected = np.zeros_like(weights)
        step = 1e-6
        for index in np.ndindex(weights.shape):
            shifted = [weights.copy(), weights.copy()]
            shifted[0][index] += step
            shifted[1][index] -= step
            objective = [
                np.mean(
                    [
                        (r - baseline) * bernoulli_log_prob(w, x, h)
                        for x, h, r in zip(xs, codes, rewards, strict=True)
                    ]
                )
                for w in shifted
            ]
            expected[index] = (objective[0] - objective[1]) / (2 * step)
        student = np.asarray(solution.policy_gradient(weights, xs, codes, rewards, baseline))
        assert student.shape == weights.shape, (
            f"policy_gradient has shape {student.shape}, expected {weights.shape}"
        )
        error = np.abs(student - expected).max()
        assert error < 1e-5, (
            f"policy_gradient differs from the finite-difference gradient of mean((r - b) log pi(h | x)) by "
            f"{error:.3g}"
        )
        return f"matches finite differences of mean((r - b) log pi) (max error {error:.1e})"

    policy_ok = run_check(report, "5a code_probabilities and sample_code", policy)
    gradient_ok = run_check(report, "5b policy_gradient", gradient)

    def learns() -> str:
        env = gym.make("RankListHash-v0", bits=16)
        started = time.perf_counter()
        with time_limit(TRAIN_SECONDS, "train"):
            trained = solution.train(env, REINFORCE_STEPS, 0)
        seconds = time.perf_counter() - started
        dataset = env.unwrapped.dataset
        query = np.asarray(solution.encode(trained, dataset.query.features))
        database = np.asarray(solution.encode(trained, dataset.database.features))
        learned = mean_average_precision(query, dataset.query.labels, database, dataset.database.labels)
        detail = f"mAP@all {learned:.3f} on digits at 16 bits after {seconds:.1f} s of training"
        assert learned >= REINFORCE_MIN_MAP, f"{detail}: needs >= {REINFORCE_MIN_MAP}"
        return detail

    name = f"5c encode's mAP after train(env, {REINFORCE_STEPS}, seed=0)"
    if policy_ok and gradient_ok:
        run_check(report, name, learns)
    else:
        report.skip(name, "fix 5a and 5b first")


EXERCISES: dict[int, tuple[str, Callable[[ModuleType, Report], None]]] = {
    1: ("DRLH's label-embedding reward", check_reward),
    2: ("the teacher policy and its mAP", check_teacher),
    3: ("average precision from per-distance counts", check_average_precision),
    4: ("linear Q-learning on BinaryCodeTravel-v0", check_q_learning),
    5: ("REINFORCE with a baseline on RankListHash-v0", check_reinforce),
}


def load_solution(path: Path, exercise: int) -> ModuleType:
    """Import a solution file by path (it need not be on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location(f"course_solution_{exercise}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grade(exercise: int, path: str | Path) -> bool:
    """Grade ``path`` as a solution of ``exercise``; print the report; return whether it passed.

    Raises:
        ValueError: if ``exercise`` is not an exercise number.
        FileNotFoundError: if ``path`` is not a file.
    """
    if exercise not in EXERCISES:
        raise ValueError(f"exercise must be one of {sorted(EXERCISES)}, got {exercise!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such solution file: {path}")
    title, check = EXERCISES[exercise]
    print(f"Exercise {exercise}: {title} -- {path}")
    report = Report()
    try:
        solution = load_solution(path, exercise)
    except Exception as error:  # a file that does not import is a failed solution
        report.add(False, "import the solution", f"{type(error).__name__}: {error}")
    else:
        check(InputGuard(solution), report)
    failed = sum(not passed for passed, _, _ in report.lines)
    print(
        f"{'PASSED' if report.passed else 'FAILED'}: {len(report.lines) - failed}/{len(report.lines)} checks"
    )
    return report.passed


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``N path/to/solution.py``; returns the exit status (0 pass, 1 fail, 2 usage)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.course.check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("exercise", type=int, choices=sorted(EXERCISES), help="exercise number")
    parser.add_argument("solution", type=Path, help="the solution file to grade")
    parsed = parser.parse_args(argv)
    try:
        return 0 if grade(parsed.exercise, parsed.solution) else 1
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
