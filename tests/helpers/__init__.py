"""Helpers shared by the test modules (fixtures live in ``tests/conftest.py``)."""
