"""ITQ baseline (PCA + iterative quantization): ``python -m agents.train itq [--bits B] [--out DIR]``."""

from typing import Any

from agents.baselines import Args, encode_split, load_model, run

__all__ = ["Args", "encode_split", "load_model", "main"]


def main(args: Args) -> dict[str, Any]:
    """Fit, encode, evaluate; write the run folder (see ``agents.baselines``)."""
    return run("itq", args)
