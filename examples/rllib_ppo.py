"""RLlib's PPO on all three environments, rollouts spread over several env runners (processes).

Needs the ``rllib`` extra, in its own virtual environment (RLlib pins its own Gymnasium):

    pip install torch==2.13.0 -e ".[rllib]"
    python -m examples.rllib_ppo --iterations 20 --env-runners 2

Two things make hashing-gym work under RLlib, and both are here:

- the env runners are other processes that never import ``hashing_gym``, so the creator makes the env
  with Gymnasium's ``module:id`` form, ``gym.make("hashing_gym:RankListHash-v0")``, which imports the
  package (and registers the ids) in whichever process builds the env;
- RLlib has no ``MultiBinary`` action distribution, so ``RankListHash-v0`` and
  ``SequentialHashBits-v0`` are wrapped in ``hashing_gym.wrappers.MultiDiscreteActions`` (the same 0/1
  actions as ``MultiDiscrete([2] * bits)``); ``Dict`` observations are flattened with the envs' own
  ``flatten=True``.

After training, RankListHash-v0's policy encodes the query and database splits (each bit the most
likely of its two values) and the mAP of Hamming ranking is printed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym
import numpy as np

ENVS: dict[str, dict[str, Any]] = {
    "RankListHash-v0": {"bits": 16},
    "SequentialHashBits-v0": {"bits": 16, "group": 4, "flatten": True},
    "BinaryCodeTravel-v0": {"bits": 16, "flatten": True},
}


def make_env(config: dict[str, Any]) -> gym.Env:
    """The env creator RLlib calls in each env runner (``config`` is RLlib's ``env_config``)."""
    from hashing_gym.wrappers import MultiDiscreteActions

    env = gym.make(f"hashing_gym:{config['env_id']}", **config["kwargs"])
    if isinstance(env.action_space, gym.spaces.MultiBinary):
        env = MultiDiscreteActions(env)
    return env


def train(env_id: str, iterations: int, env_runners: int, seed: int) -> Any:
    """Build RLlib PPO for ``env_id``, run ``iterations`` training iterations, print each one's return."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    register_env("hashing_gym_env", make_env)
    config = (
        PPOConfig()
        .environment("hashing_gym_env", env_config={"env_id": env_id, "kwargs": ENVS[env_id]})
        .env_runners(num_env_runners=env_runners, num_envs_per_env_runner=1, rollout_fragment_length="auto")
        .training(train_batch_size_per_learner=512, minibatch_size=128, num_epochs=2, lr=3e-4)
        .debugging(seed=seed)
    )
    algo = config.build_algo()
    for iteration in range(1, iterations + 1):
        start = time.perf_counter()
        result = algo.train()
        runners = result["env_runners"]
        episode_return = runners.get("episode_return_mean", float("nan"))
        steps = runners.get("num_env_steps_sampled_lifetime", 0)
        print(
            f"{env_id}: iteration {iteration}, {steps} env steps, episode return {episode_return:.3f}, "
            f"{time.perf_counter() - start:.1f} s",
            flush=True,
        )
    return algo


def rank_list_hash_map(algo: Any) -> float:
    """The mAP of RankListHash-v0's deterministic codes (each bit's likelier value) on digits."""
    import torch

    from hashing_gym.data import load_dataset
    from hashing_gym.ranking import mean_average_precision

    dataset = load_dataset("digits")
    module = algo.get_module()

    def encode(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.tensor(features, dtype=torch.float32)})
        logits = out["action_dist_inputs"].reshape(len(features), -1, 2)  # MultiDiscrete: 2 logits per bit
        return logits.argmax(dim=-1).numpy().astype(np.uint8)

    return mean_average_precision(
        encode(dataset.query.features),
        dataset.query.labels,
        encode(dataset.database.features),
        dataset.database.labels,
    )


def main(argv: list[str] | None = None) -> int:
    """Train each environment in turn; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20, help="training iterations per environment")
    parser.add_argument("--env-runners", type=int, default=2, help="RLlib env runner processes")
    parser.add_argument("--env", nargs="*", default=list(ENVS), choices=list(ENVS), help="environment ids")
    parser.add_argument("--seed", type=int, default=0)
    parsed = parser.parse_args(argv)
    if parsed.iterations < 1 or parsed.env_runners < 0:
        parser.error("--iterations must be >= 1 and --env-runners >= 0")

    import ray

    ray.init(num_cpus=max(2, parsed.env_runners + 1), include_dashboard=False, log_to_driver=False)
    try:
        for env_id in parsed.env:
            algo = train(env_id, parsed.iterations, parsed.env_runners, parsed.seed)
            if env_id == "RankListHash-v0":
                print(f"{env_id}: mAP@all of the policy's codes on digits: {rank_list_hash_map(algo):.3f}")
            algo.stop()
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
