import pytest

from agents import train


@pytest.mark.parametrize(
    ("algo", "rest", "expected"),
    [
        ("reinforce", ["--env", "SequentialHashBits-v0"], "drlih"),
        ("reinforce", ["--env=SequentialHashBits-v0", "--bits", "32"], "drlih"),
        ("reinforce", ["--env", "RankListHash-v0"], "reinforce"),
        ("reinforce", [], "reinforce"),
        ("dqn", ["--env", "SequentialHashBits-v0"], "dqn"),
    ],
)
def test_reinforce_dispatches_by_environment(algo, rest, expected):
    assert train.resolve_algorithm(algo, rest) == expected


def test_every_algorithm_module_has_the_trainer_interface():
    import importlib

    for module_name in train.ALGORITHMS.values():
        module = importlib.import_module(module_name)
        for name in ("Args", "main", "load_model", "encode_split"):
            assert hasattr(module, name), f"{module_name} lacks {name}"
