"""What every hashing-gym environment shares: a data set split, item choice, and checks.

Each environment encodes one item (a feature vector of a data set split) per episode. This
base class resolves the data set, holds the split, draws the item with ``self.np_random`` (or
takes ``options={"index": i}``), and validates the common arguments. Subclasses implement only
their MDP: observation, action and reward (Minigrid's layout).

The contract of every env, single and batched (one exception type per mistake):

- a bad action (wrong type, dtype or shape, a value outside the space, a float where the space
  holds integers) raises `InvalidActionError`. ``MultiBinary`` actions follow Gymnasium's
  ``MultiBinary.contains``: any numeric array of 0s and 1s, floats included (stable-baselines3's
  Bernoulli policies emit float 0.0/1.0), so a float such as 0.5 is refused, 1.0 is not;
- ``step`` before the first ``reset``, or after the episode ended (terminated or truncated)
  without a new ``reset``, raises `ResetNeededError` in every single env. Gymnasium's own
  ``OrderEnforcing`` wrapper checks only the first of these. Batched envs reset an ended sub-env
  themselves (autoreset, ``NEXT_STEP`` or ``SAME_STEP``); with ``autoreset_mode="Disabled"``
  stepping an ended sub-env raises `ResetNeededError` too.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np

from hashing_gym.data import HashingDataset, Split, load_dataset

# Re-exported for the env modules: the shared argument checks live in hashing_gym.validation.
from hashing_gym.validation import check_bits as check_bits
from hashing_gym.validation import check_code_matrix as check_code_matrix
from hashing_gym.validation import check_feature_matrix as check_feature_matrix

SPLITS: tuple[str, ...] = ("train", "query", "database")


@functools.lru_cache(maxsize=8)
def _load_named_dataset(name: str) -> HashingDataset:
    # Data sets are read-only, so environments built from the same name share one copy.
    return load_dataset(name)


def resolve_dataset(dataset: str | HashingDataset) -> HashingDataset:
    """A data set given by name (loaded with default options, cached) or as a ``HashingDataset``."""
    if isinstance(dataset, HashingDataset):
        return dataset
    if isinstance(dataset, str):
        return _load_named_dataset(dataset)
    raise TypeError(f"dataset must be a data set name or a HashingDataset, got {type(dataset).__name__}")


def resolve_split(dataset: HashingDataset, split: str) -> Split:
    """The named split of a data set (``"train"``, ``"query"`` or ``"database"``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return getattr(dataset, split)


def feature_bound(dataset: HashingDataset) -> float:
    """Largest absolute feature value over all splits, rounded up to an integer (at least 1).

    Finite bounds keep both env checkers quiet and equal for every split of one data set, so a
    policy trained on the train split accepts the query split's observations.
    """
    largest = max(
        float(np.abs(s.features).max(initial=0.0)) for s in (dataset.train, dataset.query, dataset.database)
    )
    return float(max(1.0, np.ceil(largest)))


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (the owner keeps writing to it)."""
    view = array.view()
    view.flags.writeable = False
    return view


def label_mask(split: Split, num_classes: int) -> np.ndarray:
    """Boolean (n, C) matrix: which classes each item of the split carries."""
    if split.labels.ndim == 2:
        return split.labels.astype(bool)
    mask = np.zeros((split.n, num_classes), dtype=bool)
    mask[np.arange(split.n), split.labels] = True
    return mask


class InvalidActionError(gym.error.InvalidAction, ValueError):
    """An action outside the environment's action space (Gymnasium's InvalidAction, and a ValueError)."""


class ResetNeededError(gym.error.ResetNeeded, RuntimeError):
    """``step`` before ``reset`` or after the episode ended (Gymnasium's ResetNeeded, and a RuntimeError)."""


class HashingEnv(gym.Env):
    """Base of the hashing environments: one item of a data set split per episode.

    Subclasses call ``super().__init__(dataset, split, render_mode)`` first, then build their
    spaces, and use ``self._choose_index(options)`` in ``reset``.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, dataset: str | HashingDataset, split: str, render_mode: str | None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.dataset = resolve_dataset(dataset)
        self.split_name = split
        self.split = resolve_split(self.dataset, split)
        self.features = self.split.features
        self.num_items, self.feature_dim = self.features.shape
        self.render_mode = render_mode
        self.index = 0

    def render(self) -> str | np.ndarray | None:
        """Text (``"ansi"``) or a picture (``"rgb_array"``) of the episode, by the subclass's renderers.

        Each environment draws its own ``_render_text()`` and ``_render_picture()``; None without a mode.
        """
        if self.render_mode == "ansi":
            return self._render_text()
        if self.render_mode == "rgb_array":
            return self._render_picture()
        return None

    def _choose_index(self, options: dict[str, Any] | None) -> int:
        """``options["index"]`` if given (validated), else an item drawn with ``self.np_random``."""
        if options and options.get("index") is not None:
            index = options["index"]
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise ValueError(f"options['index'] must be an integer, got {index!r}")
            if not 0 <= index < self.num_items:
                raise ValueError(
                    f"options['index']={index} is out of range for the {self.split_name!r} split "
                    f"of {self.num_items} items"
                )
            return int(index)
        return int(self.np_random.integers(self.num_items))

    # Snapshots: ours (Gymnasium has none), for trainers that checkpoint an env between two steps.

    def get_state(self) -> dict[str, Any]:
        """A snapshot of the env between two steps: its random stream, its item and its episode's arrays.

        Numpy arrays (copies) and JSON-able values only, never objects, so a trainer can store it
        without pickle; :meth:`set_state` on an env built with the same arguments then continues
        exactly as this one would (the same draws, observations and rewards).
        """
        return {
            "np_random": self.np_random.bit_generator.state,
            "index": int(self.index),
            **self._episode_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`get_state` snapshot of an env built with the same arguments.

        Raises:
            ValueError: if ``state`` is not such a snapshot (a missing key, an array of another
                shape or dtype, another kind of random generator).
        """
        if not isinstance(state, dict) or "np_random" not in state or "index" not in state:
            raise ValueError("set_state takes a snapshot from get_state (np_random, index, ...)")
        try:
            self._set_episode_state(state)
            self.np_random.bit_generator.state = state["np_random"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"set_state: not a snapshot of {type(self).__name__} ({error!r})") from None
        self.index = int(state["index"])

    def _episode_state(self) -> dict[str, Any]:
        """The subclass's part of :meth:`get_state`: what its episode (and bank) holds."""
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")

    def _set_episode_state(self, state: dict[str, Any]) -> None:
        """The subclass's part of :meth:`set_state` (checks its arrays with :meth:`_restored_arrays`)."""
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")

    @staticmethod
    def _restored_arrays(given: Any, template: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
        """Copies of the arrays of a snapshot, checked against ``template`` (same keys, shapes and dtypes).

        Raises:
            ValueError: naming ``what`` and the first key that is missing, extra, or of another
                shape or dtype.
        """
        if not isinstance(given, dict) or set(given) != set(template):
            keys = sorted(given) if isinstance(given, dict) else type(given).__name__
            raise ValueError(f"{what} must hold the arrays {sorted(template)}, got {keys}")
        arrays = {}
        for key, expected in template.items():
            array = np.asarray(given[key])
            if array.shape != expected.shape or array.dtype != expected.dtype:
                raise ValueError(
                    f"{what}[{key!r}] must be {expected.dtype} of shape {expected.shape}, "
                    f"got {array.dtype} of shape {array.shape}"
                )
            arrays[key] = array.copy()
        return arrays
