"""Batch ids are UUIDv7: the batches of later commits sort after earlier ones, as their
records lie on disk, which the BRIN index that finds a batch's records relies on."""

from __future__ import annotations

import time

from services.core.imports.commit import time_ordered_id


def test_batch_ids_are_uuid7_ordered_by_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    ids = [time_ordered_id() for _ in range(5_000)]
    after = time.time_ns() // 1_000_000
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {"specified in RFC 4122"}
    stamps = [i.int >> 80 for i in ids]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] <= stamps[-1] <= after
    # PostgreSQL compares uuids byte by byte: the same order as their integers.
    assert sorted(ids, key=lambda i: i.bytes) == sorted(ids, key=lambda i: i.int)
    assert len(set(ids)) == len(ids)
