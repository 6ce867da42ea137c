"""Fixtures of the end-to-end tests besides those of ``tests/conftest.py``."""

from tests.e2e.running import ferry  # noqa: F401  (a module-scoped fixture: a running Ferry)
