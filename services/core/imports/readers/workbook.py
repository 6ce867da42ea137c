"""Workbooks (xlsx, xlsb, xls, ods): read in a child process, the sheet chosen by its headers.

A spreadsheet library parsing an untrusted file can allocate without bound (one far
cell makes calamine ask for 16 GB) and, being Rust, aborts the process when that
fails. So the worker never parses a workbook itself: ``Workbook`` starts
``readers.sheets`` in a process of its own, capped at ``Limits.memory_bytes`` of
address space, which checks the file (``readers.guard``, beside calamine; nothing is
used before it has passed) and streams the records back. If that process dies, the
import fails with a message; the worker lives on.

Starting that process (Python and its imports) took a third of a small workbook's
import, so a worker keeps one started ahead (``keep_spare``): it waits, capped, for
the workbook it will read, importing fastexcel and pyarrow meanwhile for a large
sheet (``readers.typed``; it then waits at about 100 MB), and the next one is started as it is
taken. A reader opening a workbook carefully, after one died, is started afresh
without them (``plain``): their libraries would take a quarter of its address space.

Which sheet: the one named by the request, else the visible sheet whose header row
best matches the dataset (``score``), ties to the earlier one; every sheet is listed
in the layout with its score and why, so a client can offer the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

from services.core.errors import InvalidInput
from services.core.imports.readers.chunks import Chunk, Skips
from services.core.imports.readers.layout import (
    Layout,
    Limits,
    clean_headers,
    find_header,
    preamble,
)
from services.core.imports.readers.sheets import (
    WHOLE_LIMIT,
    cell_text,
    memory_exceeded,
    receive,
    send,
)

# (score 0-1, why) of a header row against the dataset; supplied by the pipeline.
Score = Callable[[list[str]], tuple[float, str]]
EXIT_SECONDS = 5


@dataclass
class SheetChoice:
    """One sheet as the layout lists it."""

    name: str
    score: float | None
    reason: str
    range: str | None = None
    rows: int = 0
    hidden: bool = False

    def document(self, chosen: str | None) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": self.score,
            "reason": self.reason,
            "range": self.range,
            "rows": self.rows,
            "hidden": self.hidden,
            "chosen": self.name == chosen,
        }


@dataclass
class _Process:
    """A reader process, started with its limits, waiting for the workbook to read."""

    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]  # what it says on dying, read by ``Workbook._died``
    limits: bytes  # as encoded on its command line

    def close(self) -> None:
        """End it unused: it exits when its input closes."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=EXIT_SECONDS)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


class _Spare:
    """The reader process started ahead, once ``keep_spare`` asked for one.

    Every reader process is started by one long-lived thread: a reader asks the kernel
    to kill it when the thread that started it ends (``PR_SET_PDEATHSIG``), which must
    be when the worker ends, not when a thread of a pool retires.
    """

    def __init__(self) -> None:
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="workbook-reader")
        self._lock = threading.Lock()
        self._waiting: _Process | None = None
        self._limits: bytes | None = None  # a spare is kept for these limits

    def keep(self, limits: Limits | None) -> None:
        """Keep a spare started for workbooks read within ``limits``; None: no more."""
        encoded = None if limits is None else msgspec.json.encode(limits)
        with self._lock:
            self._limits = encoded
            stale = self._waiting if self._waiting and self._waiting.limits != encoded else None
            if stale is not None:
                self._waiting = None
        if stale is not None:
            self._starter.submit(stale.close)
        if encoded is not None:
            self._starter.submit(self._refill, encoded)

    def fresh(self, limits: Limits, *, plain: bool) -> _Process:
        """A reader process for ``limits`` started now; ``plain``: without fastexcel."""
        encoded = msgspec.json.encode(limits)
        return self._starter.submit(_start_process, encoded, plain).result()

    def take(self, limits: Limits) -> _Process:
        """A reader process for ``limits``: the spare if it is alive, else a new one."""
        encoded = msgspec.json.encode(limits)
        with self._lock:
            spare, self._waiting = self._waiting, None
            kept = self._limits
        if spare is not None and (spare.limits != encoded or spare.proc.poll() is not None):
            spare.close()
            spare = None
        process = spare or self._starter.submit(_start_process, encoded).result()
        if kept is not None:
            self._starter.submit(self._refill, kept)
        return process

    def _refill(self, encoded: bytes) -> None:
        with self._lock:
            if self._waiting is not None or self._limits != encoded:
                return
        fresh = _start_process(encoded)
        with self._lock:
            if self._waiting is None and self._limits == encoded:
                self._waiting = fresh
                return
        fresh.close()  # another was started meanwhile, or for other limits


def _start_process(limits: bytes, plain: bool = False) -> _Process:
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process
    module = "services.core.imports.readers.sheets"
    proc = subprocess.Popen(  # noqa: S603 - our own module, no shell
        # runpy warns that the package imported this module before running it: noise that
        # would end the stderr quoted when a reader dies.
        [
            sys.executable,
            "-W",
            "ignore::RuntimeWarning:runpy",
            "-m",
            module,
            limits.decode(),
            *(["plain"] if plain else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        # One BLAS thread: numpy (under pyarrow) would map a buffer for each core.
        env={**os.environ, "RUST_BACKTRACE": "0", "OPENBLAS_NUM_THREADS": "1"},
    )
    return _Process(proc, stderr, limits)


_spare = _Spare()


def keep_spare(limits: Limits | None) -> None:
    """Keep a reader process started ahead for the workbooks this process will read
    (a worker, at start-up); the first one is started now, in the background. None
    ends the one waiting, and keeps none."""
    _spare.keep(limits)


class ReadWhole(Exception):
    """The sheet cut into parts disagreed with its description (``readers.typed``):
    open the workbook again with ``whole``, and lay it out again."""


class _Carefully(Exception):
    """The reader died opening the workbook, calamine loading beside the guard (a
    sparse sheet asking for gigabytes?): start it again, guard first, for the refusal
    that names the sheet and its range, and the other sheets read."""


class Workbook:
    """A workbook held open by its reader process; ``close()`` ends the process."""

    def __init__(
        self,
        path: Path,
        kind: str,
        limits: Limits,
        *,
        whole: bool = False,
        scratch: Path | None = None,
    ) -> None:
        """``whole``: no sheet cut into parts (``readers.typed``), after one disagreed
        with its description (``ReadWhole``). ``scratch``: where parts are written."""
        self.limits = limits
        self._whole = whole
        self._streaming = False  # a sheet's records are being read
        self._unfinished = False  # a read was left before its end: its rest is still sent
        # Parts left by a reader that died are removed with the folder they are in.
        self._own = tempfile.TemporaryDirectory(prefix="ferry-reader-") if scratch is None else None
        self._scratch = self._own.name if self._own is not None else str(scratch)
        try:
            opened = self._start(path, kind, careful=False)
        except _Carefully:
            opened = self._start(path, kind, careful=True)
        self.kind: str = opened["kind"]
        self.sheets: list[dict[str, Any]] = opened["sheets"]
        self.names = [s["name"] for s in self.sheets]

    def _start(self, path: Path, kind: str, *, careful: bool) -> dict[str, Any]:
        """Give a reader process the workbook; its description of the workbook."""
        self._opening_beside = not careful
        self._careful = careful
        self._loading: str | None = None  # the sheet calamine is loading, if any
        # Carefully: a process of its own, without fastexcel's libraries in its memory.
        plain = careful or self._whole
        self._reader = _spare.fresh(self.limits, plain=True) if plain else _spare.take(self.limits)
        try:
            with contextlib.suppress(BrokenPipeError):  # died waiting: read as its death
                workbook = {"path": str(path), "kind": kind, "careful": careful}
                send(self._pipes()[0], {**workbook, "scratch": self._scratch})
            return self._next()
        except BaseException:
            self.close()
            raise
        finally:
            self._opening_beside = False

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        proc = self._reader.proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        return proc.stdin, proc.stdout

    def _next(self) -> dict[str, Any]:
        """The next message of the reader; its refusal or its death as InvalidInput."""
        while True:
            message = receive(self._pipes()[1])
            if message is None:
                if self._opening_beside:
                    self._died()
                    raise _Carefully
                if self._streaming and not (self._whole or self._careful):
                    # A sheet cut into parts (``readers.typed``), one of them over the
                    # memory cap, say: read whole, the guard says why if it is refused.
                    self._died()
                    raise ReadWhole
                raise self._died()
            if message["t"] == "loading":
                self._loading = message["sheet"]
                continue
            if message["t"] == "error":
                raise InvalidInput(message["message"], errors=message.get("errors"))
            if message["t"] == "memory":
                if self._opening_beside:
                    raise _Carefully
                raise memory_exceeded(self._loading, self.limits)
            self._loading = None
            return message

    def _died(self) -> InvalidInput:
        proc, stderr = self._reader.proc, self._reader.stderr
        try:
            code = proc.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        stderr.seek(0)
        said = stderr.read()[-2000:].decode("utf-8", "replace")
        if code in (-signal.SIGABRT, -signal.SIGKILL) or "memory allocation" in said:
            return memory_exceeded(self._loading, self.limits)
        why = said.strip().splitlines()[-1] if said.strip() else f"exit status {code}"
        return InvalidInput(
            f"the workbook cannot be read: its reader stopped ({why})",
            errors=[{"field": "file", "message": "unreadable"}],
        )

    def read(
        self, sheet: str, header_line: int, width: int, skips: Skips, *, chunk_rows: int
    ) -> Iterator[Chunk]:
        """The records of ``sheet`` below its header line, as the reader sends them."""
        if self._unfinished:
            self._drain()  # the rest of a read left early (a date order decided late)
        send(
            self._pipes()[0],
            {"sheet": sheet, "header_line": header_line, "width": width, "chunk_rows": chunk_rows},
        )
        self._unfinished = self._streaming = True
        try:
            while (message := self._next())["t"] == "chunk":
                yield Chunk(
                    message["lines"],
                    [_column(c) for c in message["columns"]],
                    message["row_errors"],
                    set(message["unreadable"]),
                    message["position"],
                )
        finally:
            self._streaming = False
        self._unfinished = False
        if message["t"] == "again":
            raise ReadWhole
        skips.count += message["count"]
        room = skips.limit - len(skips.lines)
        skips.lines.extend(message["lines"][: max(room, 0)])

    def _drain(self) -> None:
        self._streaming = True
        try:
            while self._next()["t"] == "chunk":
                pass
        finally:
            self._streaming = False
        self._unfinished = False

    def close(self) -> None:
        """End the reader (it exits when its input closes; killed if it does not)."""
        self._reader.close()
        if self._own is not None:
            self._own.cleanup()


def _column(sent: Any) -> Any:
    """A column of a chunk as sent: text (a list, or Arrow's buffers), numbers as bytes."""
    if isinstance(sent, bytes):
        return number_texts(sent)
    if isinstance(sent, dict):
        import pyarrow as pa

        offsets, data = pa.py_buffer(sent["offsets"]), pa.py_buffer(sent["data"])
        return pa.StringArray.from_buffers(sent["n"], offsets, data)
    return sent


def number_texts(data: bytes) -> Any:
    """A column of numbers (float64 bytes) as the text a person sees, as ``cell_text``
    writes it — whole numbers without ``.0`` — by Arrow, not a call per cell."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.frombuffer(data, dtype=np.float64)
    size = np.abs(values)
    if ((np.floor(values) == values) & (size < WHOLE_LIMIT)).all():  # quantities, ids
        return pc.cast(pa.array(values.astype(np.int64)), pa.string())
    # Arrow writes repr's shortest digits, whole numbers without ".0" — but an exponent
    # where repr writes none (large numbers), none below 1e-4 where repr does, and -0.
    texts = pc.cast(pa.array(values), pa.string())
    odd = pc.match_substring(texts, "e").to_numpy(zero_copy_only=False)
    odd |= (size < 1e-4) & ((values != 0) | np.signbit(values))
    if odd.any():
        exact = pa.array([cell_text(v) for v in values[odd].tolist()], type=pa.string())
        texts = pc.replace_with_mask(texts, pa.array(odd), exact)
    return texts


def _choices(book: Workbook, score: Score, limits: Limits) -> list[SheetChoice]:
    choices = []
    for sheet in book.sheets:
        base = {"range": sheet["range"], "hidden": sheet["hidden"]}
        if sheet["refused"]:
            choices.append(SheetChoice(sheet["name"], None, sheet["refused"], **base))
            continue
        sample = [(line, cells) for line, cells in sheet["sample"] or []]
        index = find_header(sample)
        if index < 0:
            choices.append(SheetChoice(sheet["name"], 0.0, "empty", **base))
            continue
        try:
            headers = clean_headers(sample[index][1], limits)
        except InvalidInput as exc:
            choices.append(SheetChoice(sheet["name"], 0.0, exc.detail, **base))
            continue
        value, reason = score(headers)
        line = sample[index][0]
        rows = sheet["first_row"] + sheet["height"] - line
        choices.append(SheetChoice(sheet["name"], value, reason, rows=rows, **base))
    return choices


def _chosen(choices: list[SheetChoice]) -> tuple[SheetChoice, str]:
    """The best visible sheet with data, and why it was chosen."""
    ranked = [c for c in choices if c.score is not None and c.rows > 0 and not c.hidden]
    if not ranked:
        refused = [c for c in choices if c.score is None]
        if refused:
            raise InvalidInput(refused[0].reason, errors=[{"field": "file", "message": "refused"}])
        raise InvalidInput(
            "no sheet of the workbook has records below a header row",
            errors=[{"field": "file", "message": "empty workbook"}],
        )
    best = max(ranked, key=lambda c: (c.score or 0.0, -choices.index(c)))
    if len(ranked) == 1:
        return best, "the only sheet with records"
    if not best.score:
        return best, "no sheet's headers match the dataset; the first sheet with records"
    return best, f"its headers match the dataset best ({best.reason})"


def workbook_layout(book: Workbook, limits: Limits, sheet: str | None, score: Score) -> Layout:
    """Sheet, header row and headers of a workbook; every sheet listed with its score."""
    choices = _choices(book, score, limits)
    if sheet is not None:
        if sheet not in book.names:
            raise InvalidInput(
                f"the workbook has no sheet {sheet!r}; its sheets are "
                + ", ".join(repr(n) for n in book.names),
                errors=[{"field": "sheet", "message": f"no sheet {sheet!r}"}],
            )
        chosen = choices[book.names.index(sheet)]
        if chosen.score is None:
            raise InvalidInput(chosen.reason, errors=[{"field": "sheet", "message": "refused"}])
        why = "chosen by the request"
    else:
        chosen, why = _chosen(choices)
    info = book.sheets[book.names.index(chosen.name)]
    sample = [(line, cells) for line, cells in info["sample"] or []]
    index = find_header(sample)
    if index < 0:
        raise InvalidInput(
            f"the sheet {chosen.name!r} has no header row",
            errors=[{"field": "file", "message": "no header row"}],
        )
    line, cells = sample[index]
    return Layout(
        kind=book.kind,  # type: ignore[arg-type]
        headers=clean_headers(cells, limits),
        header_line=line,
        sheet=chosen.name,
        sheet_reason=why,
        sheets=[c.document(chosen.name) for c in choices],
        preamble=preamble(sample, index, "row"),
        rows_end=info["first_row"] + info["height"],
    )


def read_workbook(
    book: Workbook, layout: Layout, skips: Skips, *, chunk_rows: int
) -> Iterator[Chunk]:
    """The records of the chosen sheet after its header, ``chunk_rows`` at a time."""
    assert layout.sheet is not None
    skips.add_preamble(layout)
    yield from book.read(
        layout.sheet, layout.header_line, len(layout.headers), skips, chunk_rows=chunk_rows
    )
