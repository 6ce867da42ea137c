"""The job lifecycle: one table of transitions, and every status write the code makes in it."""

from __future__ import annotations

import pytest

from services.core import jobs
from services.core.jobs import TRANSITIONS, JobStatus, Move
from services.core.queue import FUNCTIONS

S = JobStatus


def table_pairs() -> set[tuple[str, JobStatus, JobStatus]]:
    return {(k, a, b) for k, t in TRANSITIONS.items() for a, ends in t.items() for b in ends}


def performed_pairs() -> set[tuple[str, JobStatus, JobStatus]]:
    return {(m.kind, a, m.target) for m in jobs.moves() for a in m.sources}


def test_every_status_write_is_a_transition_of_the_table() -> None:
    refused = [m for m in jobs.moves() if not m.allowed]
    assert refused == []
    assert performed_pairs() <= table_pairs()


def test_the_table_draws_nothing_the_code_does_not_do() -> None:
    assert table_pairs() - performed_pairs() == set()


def test_a_move_outside_the_table_is_refused() -> None:
    assert not Move("import", frozenset({S.COMMITTED}), S.CANCELLED).allowed
    assert not Move("export", frozenset({S.QUEUED}), S.SUCCEEDED).allowed
    assert Move("export", frozenset({S.RUNNING}), S.SUCCEEDED).allowed


def test_the_status_sets_partition_the_statuses() -> None:
    parts = [jobs.WAITING, jobs.RUNNING, jobs.AWAITING_USER, jobs.TERMINAL]
    assert sum(len(p) for p in parts) == len(JobStatus)
    assert frozenset().union(*parts) == frozenset(JobStatus)


def test_a_job_stream_ends_where_no_worker_moves_the_job_on() -> None:
    assert S.VALIDATED in jobs.STREAM_ENDS  # an import waits for its user there
    assert jobs.TERMINAL < jobs.STREAM_ENDS
    assert not jobs.STREAM_ENDS & jobs.ACTIVE


@pytest.mark.parametrize("kind", ["export", "import"])
def test_each_kind_starts_where_its_first_worker_claims_it(kind: jobs.Kind) -> None:
    first = jobs.INITIAL[kind]
    assert first in jobs.WAITING
    assert [s for s in jobs.STAGES if s.kind == kind and first in s.waiting]


def test_terminal_statuses_only_lead_to_other_terminal_ones() -> None:
    for table in TRANSITIONS.values():
        for status in jobs.TERMINAL & set(table):
            ends = table[status]
            if status == S.COMMITTED:  # but for a committed import's undo
                ends = ends - {S.ROLLING_BACK}
            assert ends <= jobs.TERMINAL


def test_every_status_a_worker_moves_on_has_one_worker_function() -> None:
    for kind in TRANSITIONS:
        for status in jobs.statuses(kind) & jobs.ACTIVE:
            runs = [f for f, s in FUNCTIONS.items() if s.kind == kind and status in s.claimable]
            assert len(runs) == 1, (kind, status, runs)
