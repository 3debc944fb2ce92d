"""Golden reference data of today's environments and ranking module (see ``record.py``)."""
