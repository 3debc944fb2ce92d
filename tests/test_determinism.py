"""Two CPU runs with the same seed give identical results.json metrics (SB3's test_deterministic style).

dqn, reinforce and drlih have their own tests (test_dqn_agent, test_listwise_agents,
test_sequential_agents); this file covers the other trainers and the baselines.
"""

import json

import pytest
from helpers import METRICS

from agents import train

TINY = {
    "ppo": [
        "--timesteps", "512", "--num-envs", "2", "--n-steps", "128", "--batch-size", "64", "--n-epochs", "1",
    ],
    "a2c": ["--timesteps", "512", "--num-envs", "2", "--n-steps", "32"],
    "rppo": [
        "--timesteps", "128", "--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1",
        "--lstm-hidden", "16", "--hidden", "16", "--bank-refresh", "64", "--group", "8",
    ],
    "lsh": [],
    "itq": ["--iterations", "5"],
    "sdh": ["--anchors", "200", "--sdh-iterations", "2"],
    "mlp-code": ["--max-iter", "20", "--hidden", "32"],
}  # fmt: skip
NO_EVAL = {"ppo": ["--eval-every", "0"], "a2c": ["--eval-every", "0"], "rppo": ["--eval-every", "0"]}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # --max-iter 20: a smoke run
@pytest.mark.parametrize("algo", list(TINY))
def test_same_seed_gives_identical_results_and_another_seed_differs(algo, tmp_path):
    def run(name, seed):
        argv = [algo, *TINY[algo], *NO_EVAL.get(algo, []), "--seed", str(seed), "--out", str(tmp_path / name)]
        assert train.main(argv) == 0
        return json.loads((tmp_path / name / "results.json").read_text())

    first, second = run("a", 5), run("b", 5)
    assert {key: first[key] for key in METRICS} == {key: second[key] for key in METRICS}
    assert first["env_steps"] == second["env_steps"]
    other = run("c", 6)
    assert any(other[key] != first[key] for key in METRICS)
