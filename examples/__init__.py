"""Runnable examples of hashing-gym (``python examples/NAME.py --quick``) and the course exercises."""
