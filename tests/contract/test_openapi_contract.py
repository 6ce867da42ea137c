"""The api keeps the contract its OpenAPI document states, checked by schemathesis.

Every operation is fuzzed with real authentication against a real server and worker
(``ferry_url``, ``ferry_worker``), and the operations linked in the document (create
an export → its job → its events → its file; upload → import → mapping → commit →
rollback) are chained with real ids. Each response must be no server error, of a
documented status and media type, with a body and headers its schema allows.

``GET /v1/events`` never ends by design, which schemathesis cannot read: it is checked
by hand below, and its two parameters are fuzzed with Hypothesis, each stream closed
once its answer has begun.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import subprocess
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from services.api.app import create_app
from services.core.imports.readers import XLSX_TYPE
from services.core.settings import Settings
from tests.conftest import SECRET
from tests.contract.conftest import sample_csv

log = logging.getLogger(__name__)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
    use_after_free,
]
# Chains are about what valid steps lead to; the fuzzing above covers invalid input.
CHAIN_CHECKS = [check for check in CHECKS if check is not negative_data_rejection]
NEVER_ENDS = "streamMyEvents"
TIMEOUT = 30  # seconds for one call; a job's event stream ends with the job
SEEN: collections.Counter[str] = collections.Counter()


# A workbook upload is bytes on the wire, as an octet-stream is.
schemathesis.serializer.alias(XLSX_TYPE, "application/octet-stream")


def document() -> dict[str, Any]:
    """The OpenAPI document, as ``create_app`` builds it (the server serves the same)."""
    return create_app(Settings(jwt_secret=SECRET)).openapi_schema.to_schema()


schema = schemathesis.openapi.from_dict(document()).exclude(operation_id=NEVER_ENDS)


@pytest.fixture(scope="module")
def ferry(ferry_url: str, ferry_worker: subprocess.Popen[bytes]) -> str:
    """The api's URL, with a worker running its jobs."""
    assert ferry_worker.poll() is None, "the worker died"
    return ferry_url


def test_the_served_document_is_the_one_tested(ferry: str) -> None:
    assert httpx.get(f"{ferry}/schema/openapi.json").json() == document()


def authenticated(case: Any, bearer: dict[str, str]) -> None:
    """As alice: the generated case's own Authorization (if any) is replaced."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = {**headers, **bearer}


def realistic(case: Any) -> None:
    """Make the generated creations real ones, so that links have real jobs to follow."""
    operation_id = case.operation.definition.raw.get("operationId")
    if operation_id == "createExport" and isinstance(case.body, dict):
        if case.body.get("format") in ("csv", "json", "ndjson", "xlsx"):
            case.body = {
                "dataset": "bookkeeping_records",
                "format": case.body["format"],
                "account_id": "main",
            }
    elif operation_id == "createImport" and case.media_type == "multipart/form-data":
        case.body = {
            "file": sample_csv(),
            "dataset": "bookkeeping_records",
            "account_id": "main",
        }
        case.query = {}


@schema.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_every_operation_keeps_its_contract(case: Any, ferry: str, bearer: dict[str, str]) -> None:
    authenticated(case, bearer)
    response = case.call(base_url=ferry, headers=bearer, timeout=TIMEOUT)
    SEEN[case.operation.label] += 1
    case.validate_response(response, checks=CHECKS, headers=bearer)


def creations_as_roots(schema: Any) -> None:
    """schemathesis guesses that an ``account_id`` refers to an Account resource that no
    operation creates, and so never starts a chain at the operations that create jobs.
    Ferry's accounts are free-form scopes: drop that guessed dependency."""
    for node in schema.analysis.dependency_graph.operations.values():
        node.inputs = [slot for slot in node.inputs if slot.resource.name != "Account"]


def test_linked_operations_chain_with_real_ids(ferry: str, bearer: dict[str, str]) -> None:
    steps: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    # The job flows the links describe; presets and webhooks are fuzzed above.
    flows = schema.include(path_regex=r"^/v1/(exports|imports|jobs|datasets)")
    creations_as_roots(flows)

    class Chains(flows.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            authenticated(case, bearer)
            realistic(case)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": ferry, "headers": bearer, "timeout": TIMEOUT}

        def after_call(self, response: Any, case: Any) -> None:
            steps[f"{case.method} {case.path} {response.status_code}"] += 1

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            # Collected, not raised: a replay against a live server meets other state,
            # which Hypothesis would report as flaky instead of the failure itself.
            try:
                case.validate_response(response, checks=CHAIN_CHECKS, headers=bearer)
            except Exception as exc:  # every failure is reported below
                failures.append(f"{case.method} {case.path}: {exc}")

    # The server's state grows as the chains run (jobs, imports), so Hypothesis may find
    # a choice it replays leads elsewhere and stop early, calling its strategy flaky:
    # what ran until then was checked all the same (``failures``, ``reached`` below).
    with contextlib.suppress(hypothesis.errors.FlakyStrategyDefinition):
        Chains.run(
            settings=hypothesis.settings(
                max_examples=40,
                stateful_step_count=6,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
                # Against a live server a replay meets other state: report, do not shrink.
                phases=[Phase.explicit, Phase.generate],
            )
        )
    log.info("contract: %d linked steps %s", steps.total(), dict(steps))
    assert not failures, "\n\n".join(failures)
    reached = {step for step in steps if "{job_id}" in step and step.endswith((" 200", " 202"))}
    # Chains reached a job's later operations with real ids, not only 404s for made-up ones.
    assert reached, "\n".join(f"{k}: {v}" for k, v in sorted(steps.items()))


def test_the_event_feed_keeps_its_contract(ferry: str, bearer: dict[str, str]) -> None:
    """`streamMyEvents` by hand: it opens as an event stream, and refuses as documented."""
    documented = document()["paths"]["/v1/events"]["get"]["responses"]
    with httpx.Client(base_url=ferry, timeout=10) as http:
        with http.stream("GET", "/v1/events", headers=bearer) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert next(response.iter_lines()) == "retry: 2000"
        for headers, status in (
            ({}, 401),
            ({"Authorization": "Bearer forged"}, 401),
            ({**bearer, "Last-Event-ID": "yesterday"}, 422),
        ):
            refused = http.get("/v1/events", headers=headers)
            assert refused.status_code == status
            assert str(status) in documented
            assert refused.headers["content-type"].startswith("application/problem+json")
        refused = http.get("/v1/events", params={"token": "not-a-token"})
        assert refused.status_code == 401


# Header values as HTTP carries them (visible Latin-1 and spaces); ids near the limits.
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"))
EVENT_IDS = st.one_of(
    HEADER_TEXT,
    st.from_regex(r"\A-?[0-9]{1,22}(-[0-9]{0,22})?\Z"),
    st.integers(2**64 - 2, 2**64).map(lambda n: f"{n}-0"),
)
FEED_ANSWERS = document()["paths"]["/v1/events"]["get"]["responses"]


@given(last_event_id=st.none() | EVENT_IDS, token=st.none() | st.text(max_size=300))
@hypothesis.settings(
    max_examples=60,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # a live server: report, do not shrink
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_the_event_feed_survives_any_parameters(
    ferry: str, bearer: dict[str, str], last_event_id: str | None, token: str | None
) -> None:
    """Whatever `Last-Event-ID` and `token` hold, the feed opens as an event stream or
    answers a documented problem; never a server error."""
    headers = {k.encode(): v.encode() for k, v in bearer.items()} if token is None else {}
    if last_event_id is not None:  # as a client sends a header: Latin-1, no edge spaces
        headers[b"Last-Event-ID"] = last_event_id.strip().encode("latin-1")
    params = {"token": token} if token is not None else {}
    with (
        httpx.Client(base_url=ferry, timeout=10) as http,
        http.stream("GET", "/v1/events", headers=headers, params=params) as response,
    ):
        status = response.status_code
        assert str(status) in FEED_ANSWERS, status
        kind = response.headers["content-type"]
        if status == 200:
            assert kind.startswith("text/event-stream")
            assert next(response.iter_lines()) == "retry: 2000"
        else:
            assert kind.startswith("application/problem+json"), kind
            problem = json.loads(response.read())
            assert problem["status"] == status


def test_the_fuzzing_reached_every_operation() -> None:
    """Runs after the fuzzing above (same module, in order): it called each operation."""
    log.info("contract: %d cases over %d operations %s", SEEN.total(), len(SEEN), dict(SEEN))
    operations = {
        f"{method.upper()} {path}"
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and op.get("operationId") != NEVER_ENDS
    }
    assert set(SEEN) == operations
