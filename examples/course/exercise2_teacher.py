"""Exercise 2: DRLH's guided-exploration teacher and its retrieval mAP.

Task sheet: exercise2_teacher.md. Fill in the parts between ``YOUR CODE`` markers, then grade with
``python -m examples.course.check 2 examples/course/exercise2_teacher.py``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers the environments
from hashing_gym.ranking import mean_average_precision  # noqa: F401 - for teacher_map


def teacher_action(code: np.ndarray, codebook: np.ndarray, positive: np.ndarray, eta: int) -> int:
    """Terminate (action ``bits``) within ``eta`` of the nearest class codeword, else flip a bit toward it.

    ``positive`` (bool (C,)) marks the item's classes; the target is the nearest of their codewords.
    """
    # ----- YOUR CODE (2a) ------------------------------------------------------------------------------
    raise NotImplementedError("2a: teacher_action")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


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
    """uint8 (n, bits): the code the teacher reaches for every item of the env's split.

    For each item: ``env.reset(options={"index": i})``, then follow ``teacher_action`` (the codebook is
    ``env.unwrapped.codebook``, eta ``env.unwrapped.eta``) until the episode ends; keep the last code.
    """
    # ----- YOUR CODE (2b) ------------------------------------------------------------------------------
    raise NotImplementedError("2b: encode_split")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def teacher_map(bits: int = 16) -> float:
    """mAP@all of the teacher's codes on digits: query split against database split, from all-zero codes.

    Make one env per split (``gym.make("BinaryCodeTravel-v0", bits=bits, split=..., init="zeros")``) and
    rank with ``mean_average_precision``; the labels are in ``env.unwrapped.dataset``.
    """
    # ----- YOUR CODE (2b) ------------------------------------------------------------------------------
    raise NotImplementedError("2b: teacher_map")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


if __name__ == "__main__":
    print(f"teacher mAP@all at 16 bits: {teacher_map(16):.4f}")
