"""Training and evaluation of hashing agents and baselines (``python -m agents.train ALGO``)."""
