"""`ferry export | import | jobs | rollback` as a person and a script use them, against a
running Ferry: the progress bar on a terminal, summaries, `--json` and exit codes."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.imports_helpers import orders_csv
from tests.e2e.running import Rule, Running, answer, fault_proxy, write_orders

FERRY = str(Path(sys.executable).parent / "ferry")
DATASET = "bookkeeping_records"
BIG = 200_000
DEADLINE = 90.0


@pytest.fixture(scope="module")
def big_account(ferry: Running) -> str:
    ferry.seed("big", BIG)
    return "big"


def ferry_cli(
    ferry: Running, *args: str, cwd: Path, sub: str = "alice", **env: str
) -> subprocess.CompletedProcess[str]:
    """`ferry …` with pipes, as a script runs it."""
    return subprocess.run(
        [FERRY, *args],
        cwd=cwd,
        env=ferry.env(sub, **env),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def in_terminal(
    ferry: Running, *args: str, cwd: Path, stdout_pipe: bool = False
) -> tuple[int, str, str]:
    """`ferry …` on a pseudo-terminal, as a person runs it: (exit code, terminal, stdout).

    With ``stdout_pipe`` only stderr (and stdin) are the terminal, as in ``ferry … > file``.
    """
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [FERRY, *args],
        cwd=cwd,
        env=ferry.env() | {"TERM": "xterm"},
        stdin=slave,
        stdout=subprocess.PIPE if stdout_pipe else slave,
        stderr=slave,
    )
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        screen += data
    os.close(master)
    out = ""
    if proc.stdout is not None:
        with proc.stdout:
            out = proc.stdout.read().decode()
    return proc.wait(timeout=10), screen.decode(), out


BAR = re.compile(r"\[[#-]{24}\]\s+[\d,]+/[\d,]+ rows\s+[\d,]+ rows/s")


@pytest.mark.slow
def test_a_person_sees_a_live_progress_bar(
    ferry: Running, big_account: str, tmp_path: Path
) -> None:
    code, screen, _ = in_terminal(
        ferry,
        "export", DATASET, "--format", "xlsx", "--preset", "financial",
        "--account", big_account, "--since", "2000-01-01", "-o", "year.xlsx",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, screen
    bars = BAR.findall(screen)
    assert len(bars) >= 2, screen  # redrawn as the rows went by
    assert "\r" in screen
    assert "ETA" in screen
    assert re.search(r"exported 200,000 rows to year\.xlsx \([\d.]+ MB, sha256 verified\)", screen)
    assert (tmp_path / "year.xlsx").stat().st_size > 0


def test_no_progress_bar_for_json_or_without_a_terminal(
    ferry: Running, big_account: str, tmp_path: Path
) -> None:
    args = ["export", DATASET, "--account", big_account]  # CSV: as many events, sooner
    code, screen, out = in_terminal(
        ferry, *args, "--json", "-o", "a.csv", cwd=tmp_path, stdout_pipe=True
    )
    assert code == 0, screen
    assert screen == ""  # the terminal (stderr) stayed quiet
    document = json.loads(out)
    assert document["status"] == "succeeded"
    assert document["result"]["rows"] == BIG
    assert document["path"] == "a.csv"

    piped = ferry_cli(ferry, *args, "-o", "b.csv", cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert "\r" not in piped.stdout
    assert piped.stdout.startswith("exported 200,000 rows to b.csv")


def test_an_import_summary_and_the_exit_codes_a_script_sees(ferry: Running, tmp_path: Path) -> None:
    orders = write_orders(tmp_path / "orders.csv")
    base = ["import", "orders.csv", "--dataset", DATASET, "--account", "cli"]
    mapped = [*base, "--map", "Total Price=sale_price"]

    checked = ferry_cli(ferry, *mapped, "--errors-report", "fix.csv", cwd=tmp_path)
    assert checked.returncode == 3, checked.stderr  # invalid rows, nothing committed
    assert (
        checked.stderr
        == "ferry: 2 rows are invalid; nothing committed (see --commit-skip-invalid)\n"
    )
    out = checked.stdout
    assert "orders.csv: validated, 12 rows: 10 valid, 2 invalid" in out
    assert "delimiter ','" in out
    assert re.search(r"Total Price\s+-> sale_price\s+1\.00 chosen", out)
    assert re.search(r"Sold For\s+\(not imported\)", out)
    assert out.index("Order Number") < out.index("Sale Date") < out.index("Total Price")
    assert "line 6, sale_date:" in out
    assert (tmp_path / "fix.csv").read_text(encoding="utf-8-sig").count("\n") == 3

    refused = ferry_cli(ferry, *mapped, "--commit", cwd=tmp_path)
    assert refused.returncode == 3
    assert refused.stderr.startswith("ferry: not committed: 2 of 12 rows are invalid")

    skipped = ferry_cli(ferry, *mapped, "--commit-skip-invalid", "--json", cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    committed = json.loads(skipped.stdout)
    assert committed["status"] == "committed"
    assert committed["batch"]["rows"] == 10

    undone = ferry_cli(ferry, "rollback", committed["id"], cwd=tmp_path)
    assert undone.returncode == 0, undone.stderr
    assert f"import {committed['id']} is rolled_back: 10 rows removed" in undone.stdout

    listed = ferry_cli(ferry, "jobs", "--kind", "import", "--json", cwd=tmp_path)
    jobs = json.loads(listed.stdout)
    assert [j["status"] for j in jobs][:1] == ["rolled_back"]
    assert len(jobs) == 3
    table = ferry_cli(ferry, "jobs", cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == ["ID", "KIND", "STATUS", "DATASET", "PROGRESS", "CREATED"]
    assert committed["id"] in table[1]

    validated = jobs[1]["id"]  # the refused one: validated, never committed
    conflict = ferry_cli(ferry, "rollback", validated, cwd=tmp_path)
    assert conflict.returncode == 4
    assert "only a committed import can be rolled back" in conflict.stderr
    assert orders.exists()


def test_an_upsert_from_the_terminal_counts_and_rolls_back(ferry: Running, tmp_path: Path) -> None:
    (tmp_path / "first.csv").write_bytes(orders_csv(4))
    (tmp_path / "second.csv").write_bytes(orders_csv(4, start=2).replace(b",paid", b",shipped"))
    base = ["--dataset", DATASET, "--account", "cli-upsert"]
    first = ferry_cli(ferry, "import", "first.csv", *base, "--commit", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert re.search(r"^committed 4 rows \(batch ", first.stdout, re.M)

    checked = ferry_cli(ferry, "import", "second.csv", *base, cwd=tmp_path)
    assert checked.returncode == 3  # insert: the 2 existing orders are invalid
    assert "2 rows name records the account has already (--mode upsert" in checked.stdout

    upsert = ferry_cli(
        ferry, "import", "second.csv", *base, "--mode", "upsert", "--commit", cwd=tmp_path
    )
    assert upsert.returncode == 0, upsert.stderr
    assert "committed 4 rows: 2 inserted, 2 updated (batch " in upsert.stdout
    skip = ferry_cli(
        ferry, "import", "second.csv", *base, "--mode", "skip_existing", "--commit", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert skip.returncode == 0, skip.stderr
    batch = json.loads(skip.stdout)["batch"]
    assert (batch["mode"], batch["inserted"], batch["updated"]) == ("skip_existing", 0, 0)
    assert batch["skipped_existing"] == 4

    upserted = re.search(r"`ferry rollback ([0-9a-f-]+)`", upsert.stdout)
    assert upserted is not None
    undone = ferry_cli(ferry, "rollback", upserted[1], cwd=tmp_path)
    assert undone.returncode == 0, undone.stderr
    assert undone.stdout == (
        f"import {upserted[1]} is rolled_back: 2 rows removed, "
        "2 restored as they were before the import\n"
    )
    again = ferry_cli(ferry, "rollback", upserted[1], "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["status"] == "rolled_back"

    helped = " ".join(ferry_cli(ferry, "import", "--help", cwd=tmp_path).stdout.split())
    assert "upsert updates that record" in helped
    assert "skip_existing leaves it out" in helped


@pytest.mark.slow
def test_rollback_shows_its_progress_on_a_terminal(ferry: Running, tmp_path: Path) -> None:
    (tmp_path / "many.csv").write_bytes(orders_csv(20_000, start=500_000))
    committed = ferry_cli(
        ferry, "import", "many.csv", "--dataset", DATASET, "--account", "cli-bar", "--commit",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert committed.returncode == 0, committed.stderr
    job = json.loads(committed.stdout)["id"]
    code, screen, _ = in_terminal(ferry, "rollback", job, cwd=tmp_path)
    assert code == 0, screen
    assert re.search(r"roll back\s+" + BAR.pattern, screen)  # a live bar while it runs …
    assert "20,000/20,000 rows" in screen
    assert f"import {job} is rolled_back: 20,000 rows removed" in screen  # … to its end


def test_exit_codes_for_auth_not_found_usage_and_outages(ferry: Running, tmp_path: Path) -> None:
    nobody = ferry_cli(ferry, "jobs", cwd=tmp_path, FERRY_TOKEN="forged")
    assert nobody.returncode == 5
    assert "FERRY_TOKEN" in nobody.stderr
    missing = ferry_cli(ferry, "rollback", "00000000-0000-0000-0000-000000000000", cwd=tmp_path)
    assert missing.returncode == 6
    usage = ferry_cli(ferry, "import", "nope.csv", "--dataset", DATASET, cwd=tmp_path)
    assert usage.returncode == 2
    assert "--account" in usage.stderr
    bad_filter = ferry_cli(ferry, "export", DATASET, "--filter", "colour=red", cwd=tmp_path)
    assert bad_filter.returncode == 3
    assert "colour" in bad_filter.stderr
    down = answer(503, "Service Unavailable", {"Retry-After": "3600"}, b"")
    with fault_proxy(ferry.url, Rule("GET /v1/jobs", answer=down)) as proxy:
        outage = ferry_cli(ferry, "jobs", cwd=tmp_path, FERRY_URL=proxy.url)
    assert outage.returncode == 7
    assert outage.stderr.startswith("ferry: ")
    assert len(outage.stderr.splitlines()) <= 2  # a line, not a traceback


def test_the_client_alone_runs_as_a_module(ferry: Running, tmp_path: Path) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "ferry_client", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert version.stdout.strip() == "ferry-client 0.1.0"
    listed = subprocess.run(
        [sys.executable, "-m", "ferry_client", "jobs", "--json"],
        env=ferry.env("nobody-yet"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
