"""What several test files share: the results.json contract and a no-warnings checker."""

import warnings

METRICS = ("map", "map_tie_aware", "map_at_k", "precision_radius2")
# The fields DESIGN.md fixes for every run's results.json.
RESULT_FIELDS = {"algo", "env", "dataset", "bits", "seed", *METRICS, "train_seconds", "env_steps", "versions"}


class no_warnings:
    """Fail on any warning inside the block (the env checkers report problems as warnings)."""

    def __enter__(self):
        self._catcher = warnings.catch_warnings(record=True)
        self.records = self._catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catcher.__exit__(*exc)
        messages = [str(record.message) for record in self.records]
        assert not messages, messages
        return False
