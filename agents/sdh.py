"""SDH baseline (supervised discrete hashing, Shen et al. 2015).

``python -m agents.train sdh [--bits B] [--out DIR]``.
"""

from typing import Any

from agents.baselines import Args, encode_split, load_model, run

__all__ = ["Args", "encode_split", "load_model", "main"]


def main(args: Args) -> dict[str, Any]:
    """Fit, encode, evaluate; write the run folder (see ``agents.baselines``)."""
    return run("sdh", args)
