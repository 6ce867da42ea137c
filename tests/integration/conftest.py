"""Fixtures of the integration tests (the shared ones are in tests/conftest.py)."""

import pytest

from services.core import jobs
from services.core.deps import Deps
from services.core.queue import arq_redis, enqueue
from tests.conftest import JobFactory


@pytest.fixture
async def job(deps: Deps, make_job: JobFactory) -> jobs.Job:
    """An export job, queued in the database and in arq (what the runner tests run)."""
    made = await make_job()
    await enqueue(arq_redis(deps.redis), made)
    return made
