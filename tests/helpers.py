"""What several test files share: the results.json contract, a no-warnings checker, hostile payloads."""

import base64
import io
import json
import pickle
import warnings
import zipfile

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


class Payload:
    """Unpickling this creates ``marker``: the stand-in for any code a shared file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_zip(marker):
    """An SB3 model zip whose ``data`` entry carries a serialized object, as SB3's ``save`` writes one."""
    serialized = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": serialized}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data", json.dumps(data))
        archive.writestr("_stable_baselines3_version", "2.9.2")
    return buffer.getvalue()
