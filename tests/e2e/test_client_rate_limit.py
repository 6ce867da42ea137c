"""ferry_client against a Ferry whose rate limit is tiny: a real 429 with Retry-After
is waited out (or raised at once when it asks for longer than the client waits)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ferry_client import Ferry, RateLimited

from tests.e2e.running import Running, fault_proxy, start_ferry

DATASET = "bookkeeping_records"
WINDOW = 3  # seconds: one request per user in each (room for a slow machine between two)


@pytest.fixture(scope="module")
def limited(
    pg_admin_url: str,
    template_db: str,
    redis_base_url: str,
    redis_db: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    """A Ferry that lets each user make one request every WINDOW seconds."""
    with start_ferry(
        pg_admin_url,
        template_db,
        f"{redis_base_url}/{redis_db}",
        tmp_path_factory.mktemp("limited"),
        rate_limit_user=1,
        rate_limit_window_seconds=WINDOW,
    ) as running:
        yield running


def test_a_429_is_waited_out_as_retry_after_says(limited: Running) -> None:
    limited.seed("limited", 10)
    # The proxy only watches: the 429 comes from Ferry itself.
    with fault_proxy(limited.url) as proxy, Ferry(proxy.url, limited.token("lim")) as client:
        assert [d.name for d in client.datasets()] == [DATASET]  # spends the window's quota
        job = client.export(DATASET, "csv", account_id="limited").wait()
        posts = proxy.requests("POST /v1/exports")
        jobs = list(client.jobs())
    assert job.status == "succeeded"
    assert len(posts) >= 2  # refused with 429 first, then sent again after Retry-After …
    assert len({p.headers["idempotency-key"] for p in posts}) == 1  # … as the same request
    assert [j.id for j in jobs] == [job.id]  # one job was created


def test_a_retry_after_longer_than_the_client_waits_raises_at_once(limited: Running) -> None:
    with Ferry(limited.url, limited.token("hasty"), max_retry_wait=0.1) as client:
        client.datasets()
        with pytest.raises(RateLimited) as refused:
            client.datasets()
    assert refused.value.status == 429
    assert refused.value.retry_after is not None
    assert 0 < refused.value.retry_after <= WINDOW
