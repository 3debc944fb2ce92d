"""Exercise 2, reference solution: DRLH's guided-exploration teacher and its retrieval mAP."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers the environments
from hashing_gym.ranking import mean_average_precision


def teacher_action(code: np.ndarray, codebook: np.ndarray, positive: np.ndarray, eta: int) -> int:
    """Terminate (action ``bits``) within ``eta`` of the nearest class codeword, else flip a bit toward it."""
    code = np.asarray(code)
    distances = (codebook != code).sum(axis=1)
    classes = np.flatnonzero(positive)
    target = classes[distances[classes].argmin()]
    if distances[target] <= eta:
        return len(code)
    return int(np.flatnonzero(codebook[target] != code)[0])


def positive_classes(env: gym.Env, index: int) -> np.ndarray:
    """Boolean (C,): the classes of item ``index`` of the env's split (single- or multi-label)."""
    core = env.unwrapped
    labels = core.split.labels
    if labels.ndim == 2:
        return labels[index].astype(bool)
    positive = np.zeros(core.dataset.num_classes, dtype=bool)
    positive[labels[index]] = True
    return positive


def encode_split(env: gym.Env) -> np.ndarray:
    """uint8 (n, bits): the code the teacher reaches for every item of the env's split."""
    core = env.unwrapped
    codes = np.zeros((core.num_items, core.bits), dtype=np.uint8)
    for index in range(core.num_items):
        obs, _ = env.reset(options={"index": index})
        positive = positive_classes(env, index)
        done = False
        while not done:
            action = teacher_action(obs["code"], core.codebook, positive, core.eta)
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        codes[index] = obs["code"]
    return codes


def teacher_map(bits: int = 16) -> float:
    """mAP@all of the teacher's codes on digits: query split against database split, from all-zero codes."""
    query = gym.make("BinaryCodeTravel-v0", bits=bits, split="query", init="zeros")
    database = gym.make("BinaryCodeTravel-v0", bits=bits, split="database", init="zeros")
    dataset = query.unwrapped.dataset
    return mean_average_precision(
        encode_split(query), dataset.query.labels, encode_split(database), dataset.database.labels
    )
