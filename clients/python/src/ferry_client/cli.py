"""The command line for people and scripts: ``ferry export | import | jobs | rollback``.

Built on ``Ferry``. ``services/cli.py`` hands these subcommands here, so ``ferry export
…`` works beside the server; with the client alone they are ``python -m ferry_client
…`` (or ``ferry-client …``). A live progress bar goes to stderr when it is a terminal;
``--json`` prints the resulting document on stdout instead of the summary. Exit codes
(``EXIT_CODES``) tell a script what went wrong.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import msgspec

from ferry_client._base import DEFAULT_URL, FORMATS, __version__
from ferry_client._exceptions import (
    ApiError,
    Conflict,
    ConnectionFailed,
    FerryError,
    Forbidden,
    Gone,
    Invalid,
    JobFailed,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    WaitTimeout,
)
from ferry_client._sync import ExportJob, Ferry, ImportJob
from ferry_client.models import Batch, CommitMode, Import, Job, Progress, Source

OK, FAILED, USAGE, INVALID, CONFLICT, AUTH, NOT_FOUND, UNAVAILABLE = range(8)
EXIT_CODES = """\
exit codes:
  0  done
  1  the job failed or was cancelled (or the download did not verify)
  2  usage: a missing or malformed option
  3  invalid: the request (an unknown dataset, say), or rows of the imported file, are
     not valid
  4  conflict: not possible in the job's current state (e.g. a rollback to confirm)
  5  auth: no valid token (FERRY_TOKEN), or it lacks the permission
  6  not found: no such job, an export's file expired, or a direct export's unknown
     dataset (in its path)
  7  unavailable: the server could not be reached, failed or stayed busy
"""
# Most specific first: the first class an error is an instance of decides.
_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (JobFailed, FAILED),
    (Invalid, INVALID),
    (TooLarge, INVALID),
    (Unauthorized, AUTH),
    (Forbidden, AUTH),
    (NotFound, NOT_FOUND),
    (Gone, NOT_FOUND),
    (Conflict, CONFLICT),
    (RateLimited, UNAVAILABLE),
    (ServerError, UNAVAILABLE),
    (ConnectionFailed, UNAVAILABLE),
    (WaitTimeout, UNAVAILABLE),
)


def exit_code(exc: BaseException) -> int:
    return next((code for cls, code in _CODES if isinstance(exc, cls)), FAILED)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


# --- output -------------------------------------------------------------------------------


class Bar:
    """A one-line progress bar on a terminal: done/total, rate, ETA. Silent elsewhere."""

    WIDTH = 24

    def __init__(self, stream: IO[str], *, enabled: bool, label: str) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.label = label
        self.started = time.monotonic()
        self.drawn = 0.0
        self.shown = False

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        throttled = now - self.drawn < 0.1 and progress.done != progress.total
        if not self.enabled or throttled:
            return
        self.drawn = now
        self.shown = True
        self.stream.write("\r\033[K" + self.line(progress, now - self.started))
        self.stream.flush()

    def line(self, p: Progress, elapsed: float) -> str:
        """``label [#####---] 120,000/200,000 rows  48,000 rows/s  ETA 2s``; with no total
        known yet, a block that moves back and forth, the rows and the rate."""
        rows = p.done if p.unit == "rows" else p.rows
        if p.total:
            fraction = min(p.done / p.total, 1.0)
            filled = int(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            count = f"{p.done:,}/{p.total:,} rows" if p.unit == "rows" else f"{fraction:.0%}"
        else:
            at = int(elapsed * 8) % (2 * self.WIDTH - 8)
            at = min(at, 2 * self.WIDTH - 8 - at)
            bar = "-" * at + "####" + "-" * (self.WIDTH - 4 - at)
            count = ""
        if rows is not None and p.unit != "rows":
            count = f"{count}  {rows:,} rows".strip()
        elif not p.total:
            count = f"{p.done:,} rows"
        rate = f"{rows / elapsed:,.0f} rows/s" if rows and elapsed > 0 else ""
        eta = ""
        if p.total and 0 < p.done < p.total and elapsed > 0:
            eta = f"ETA {_duration(elapsed * (p.total - p.done) / p.done)}"
        return "  ".join(part for part in (self.label, f"[{bar}]", count, rate, eta) if part)

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _print_json(document: Any, extra: dict[str, Any] | None = None) -> None:
    data = msgspec.to_builtins(document)
    if extra and isinstance(data, dict):
        data.update(extra)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(data)).decode() + "\n")


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


# --- export -------------------------------------------------------------------------------


def _filters(ferry: Ferry, args: argparse.Namespace) -> dict[str, str]:
    filters: dict[str, str] = {}
    for item in args.filter or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _Usage(f"--filter takes NAME=VALUE, not {item!r}")
        filters[name.strip()] = value.strip()
    if args.since or args.until:
        field = next((f.name for f in ferry.dataset(args.dataset).fields if f.type == "date"), None)
        if field is None:
            raise _Usage(f"{args.dataset} has no date field for --since/--until; use --filter")
        if args.since:
            filters[f"{field}_from"] = args.since
        if args.until:
            filters[f"{field}_to"] = args.until
    return filters


def cmd_export(ferry: Ferry, args: argparse.Namespace) -> int:
    fmt = args.format or _format_from(args.output) or "csv"
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    job = ferry.export(
        args.dataset,
        fmt,
        columns=columns,
        preset=args.preset,
        filters=_filters(ferry, args),
        account_id=args.account,
        compression="gzip" if args.gzip else None,
    )
    started = time.monotonic()
    _wait(job, args, f"export {args.dataset}")
    result = job.result
    assert result is not None
    path = job.download(Path(args.output or result.filename))
    if args.json:
        _print_json(job.data, {"path": str(path)})
    else:
        took = time.monotonic() - started
        _say(
            f"exported {result.rows:,} rows to {path} ({_size(result.bytes)}, sha256 verified) "
            f"in {took:.1f} s"
        )
    return OK


def _format_from(output: str | None) -> str | None:
    if not output:
        return None
    suffixes = [s.lstrip(".").lower() for s in Path(output).suffixes if s.lower() != ".gz"]
    return suffixes[-1] if suffixes and suffixes[-1] in FORMATS else None


def _wait(job: ExportJob | ImportJob, args: argparse.Namespace, label: str) -> None:
    bar = Bar(sys.stderr, enabled=not args.json, label=label)
    try:
        job.wait(progress=bar)
    finally:
        bar.close()


# --- import -------------------------------------------------------------------------------


def _mapping(items: Iterable[str]) -> dict[str, str | None]:
    """``["Total Price=sale_price", "Notes="]`` → ``{"Total Price": "sale_price", "Notes": None}``
    (split at the last ``=``: field names have none, column names may)."""
    mapping: dict[str, str | None] = {}
    for item in items:
        column, sep, field = item.rpartition("=")
        if not sep or not column:
            raise _Usage(f'--map takes "COLUMN=FIELD" (or "COLUMN=" to skip it), not {item!r}')
        mapping[column] = field.strip() or None
    return mapping


def cmd_import(ferry: Ferry, args: argparse.Namespace) -> int:
    mapping = _mapping(args.map or ())
    path = Path(args.file)
    if not path.is_file():
        raise _Usage(f"no such file: {path}")
    imp = ferry.import_file(path, args.dataset, args.account, sheet=args.sheet, via=args.upload)
    _wait(imp, args, f"validate {path.name}")
    if mapping:
        imp.set_mapping(mapping)
        _wait(imp, args, f"validate {path.name}")
    if args.errors_report and imp.data.links.error_report:
        imp.errors_report(args.errors_report)
    if not args.json:
        _say("\n".join(summary(imp.data)))
        if args.errors_report and imp.data.links.error_report:
            _say(f"  the failed rows are in {args.errors_report}")
    invalid = _invalid(imp.data, args.mode)
    code = OK
    if args.commit or args.commit_skip_invalid:
        code = _commit(imp, args)
    elif invalid:
        code = INVALID
        _complain(f"{invalid:,} rows are invalid; nothing committed (see --commit-skip-invalid)")
    elif not args.json:
        _say(f"not committed; commit with --commit (import {imp.id})")
    if args.json:
        _print_json(imp.data)
    return code


def _invalid(doc: Import, mode: CommitMode) -> int:
    """The rows a commit in ``mode`` would refuse (in ``insert`` mode, rows whose key
    names an existing record too)."""
    if doc.modes is not None:
        return int(getattr(doc.modes, mode).invalid)
    return doc.totals.invalid if doc.totals else 0


def _commit(imp: ImportJob, args: argparse.Namespace) -> int:
    bar = Bar(sys.stderr, enabled=not args.json, label="commit")
    try:
        imp.commit("skip" if args.commit_skip_invalid else "fail", mode=args.mode, progress=bar)
    except Conflict as exc:
        totals = exc.problem.get("totals") or {}
        _complain(f"not committed: {exc.detail}")
        return (
            INVALID if totals.get("invalid") or exc.problem.get("unmapped_required") else CONFLICT
        )
    finally:
        bar.close()
    batch = imp.data.batch
    if not args.json and batch is not None:
        until = batch.rollback_until.strftime("%Y-%m-%d %H:%M %Z") if batch.rollback_until else "-"
        _say(
            f"committed {batch.rows:,} rows{_counts(batch)} (batch {batch.id}); "
            f"`ferry rollback {imp.id}` undoes it until {until}"
        )
    return OK


def _counts(batch: Batch) -> str:
    """``: 5 inserted, 7 updated, 2 skipped as existing, 1 invalid skipped`` (the parts
    that are not zero; nothing for a plain insert of every row)."""
    inserted = batch.rows - batch.updated if batch.inserted is None else batch.inserted
    parts = [
        (inserted, "inserted"),
        (batch.updated, "updated"),
        (batch.skipped_existing, "skipped as existing"),
        (batch.skipped or 0, "invalid skipped"),
    ]
    if batch.mode == "insert" and not batch.skipped:
        return ""
    return ": " + ", ".join(f"{n:,} {what}" for n, what in parts if n or what == "inserted")


def summary(doc: Import) -> Iterator[str]:
    """What Ferry understood of a file, for a person."""
    src = doc.source
    totals = doc.totals
    head = f"{src.filename or 'upload'}: {doc.status}"
    if totals is not None:
        head += f", {totals.rows:,} rows: {totals.valid:,} valid, {totals.invalid:,} invalid" + (
            f", {totals.skipped_lines:,} lines skipped" if totals.skipped_lines else ""
        )
    yield head
    if src.encoding or src.sheet:
        yield "  read as " + _read_as(src)
    if doc.mapping:
        yield "  mapping:"
        width = max(len(column) for column in doc.mapping)
        for column, entry in doc.mapping.items():
            if entry is None:
                yield f"    {column:<{width}}  (not imported)"
            else:
                yield (
                    f"    {column:<{width}}  -> {entry.field:<16} {entry.confidence:.2f} "
                    f"{entry.reason}"
                )
    if doc.unmapped_required:
        yield "  required fields with no column: " + ", ".join(doc.unmapped_required)
    if doc.existing:
        yield (
            f"  {doc.existing:,} rows name records the account has already "
            "(--mode upsert updates them, --mode skip_existing leaves them out)"
        )
    if doc.errors:
        yield "  first errors:"
        for error in doc.errors[:10]:
            where = f"line {error.line}" + (f", {error.field}" if error.field else "")
            yield f"    {where}: {error.message}"


def _read_as(src: Source) -> str:
    read = [f"encoding {src.encoding}" + (f" ({src.encoding_reason})" * bool(src.encoding_reason))]
    if src.delimiter:
        read.append(f"delimiter {src.delimiter!r}")
    if src.sheet:
        read.append(f"sheet {src.sheet!r}")
    if src.header_line:
        read.append(f"header on line {src.header_line}")
    return ", ".join(read if src.encoding else read[1:])


# --- jobs, rollback -----------------------------------------------------------------------


def cmd_jobs(ferry: Ferry, args: argparse.Namespace) -> int:
    found: list[Job] = []
    for job in ferry.jobs(kind=args.kind, status=args.status, page_size=min(args.limit, 200)):
        found.append(job)
        if len(found) >= args.limit:
            break
    if args.json:
        _print_json(found)
        return OK
    rows = [("ID", "KIND", "STATUS", "DATASET", "PROGRESS", "CREATED")]
    for job in found:
        progress = ""
        if job.progress is not None and job.progress.total:
            progress = f"{min(job.progress.done / job.progress.total, 1):.0%}"
        created = job.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        rows.append((job.id, job.kind, job.status, job.dataset, progress, created))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not found:
        _say("no jobs")
    return OK


def cmd_rollback(ferry: Ferry, args: argparse.Namespace) -> int:
    imp = ferry.import_job(args.id)
    bar = Bar(sys.stderr, enabled=not args.json, label="roll back")
    try:
        imp.rollback(confirm=args.confirm, progress=bar)
    except Conflict as exc:
        again = "; run again with --confirm to roll back anyway"
        _complain(
            f"not rolled back: {exc.detail}"
            + again * bool(exc.problem.get("requires_confirmation"))
        )
        return CONFLICT
    finally:
        bar.close()
    if args.json:
        _print_json(imp.data)
    elif (batch := imp.data.batch) is not None and batch.updated:
        removed = batch.rows - batch.updated
        _say(
            f"import {imp.id} is {imp.status}: {removed:,} rows removed, "
            f"{batch.updated:,} restored as they were before the import"
        )
    else:
        rows = batch.rows if batch else 0
        _say(f"import {imp.id} is {imp.status}: {rows:,} rows removed")
    return OK


# --- the parser ---------------------------------------------------------------------------


class _Usage(Exception):
    """A usage error found after parsing (exit 2)."""


Command = Callable[[Ferry, argparse.Namespace], int]


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        metavar="URL",
        help=f"Ferry's address (default: $FERRY_URL, else {DEFAULT_URL})",
    )
    common.add_argument("--token", metavar="JWT", help="bearer token (default: $FERRY_TOKEN)")
    common.add_argument(
        "--json",
        action="store_true",
        help="print the resulting document as JSON on stdout, no progress bar (for scripts)",
    )
    return common


def add_commands(sub: Any) -> None:
    """Add export, import, jobs and rollback to ``sub`` (an argparse subparsers object)."""
    common = [_common()]

    def command(name: str, func: Command, help: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name,
            parents=common,
            help=help,
            description=description,
            epilog=EXIT_CODES,
            formatter_class=_Formatter,
        )
        parser.set_defaults(func=lambda args: run(func, args))
        return parser

    export = command(
        "export",
        cmd_export,
        "export a dataset to a file, with a progress bar",
        "Start a background export, follow it live, download the file and check its sha256.\n"
        "e.g. ferry export bookkeeping_records --format xlsx --preset financial "
        "--account main --since 2026-01-01 -o year.xlsx",
    )
    export.add_argument("dataset", help="the dataset to export, e.g. bookkeeping_records")
    export.add_argument(
        "--format",
        choices=FORMATS,
        help="file format (default: from the -o suffix, else csv)",
    )
    export.add_argument(
        "--preset", help="a named column set: essential, financial or all (default: all)"
    )
    export.add_argument("--columns", help="comma-separated field names (instead of --preset)")
    export.add_argument("--account", metavar="ID", help="only this account's records")
    export.add_argument(
        "--since", metavar="YYYY-MM-DD", help="records from this date on (the first date field)"
    )
    export.add_argument("--until", metavar="YYYY-MM-DD", help="records up to this date (inclusive)")
    export.add_argument(
        "--filter",
        action="append",
        metavar="NAME=VALUE",
        help="any filter of the api, e.g. status=shipped,paid or profit_min=10 (repeatable)",
    )
    export.add_argument("--gzip", action="store_true", help="compress the file (not for xlsx)")
    export.add_argument(
        "-o", "--output", metavar="PATH", help="where to save it (default: the server's filename)"
    )

    imp = command(
        "import",
        cmd_import,
        "upload a CSV/XLSX file, show what Ferry understood, optionally commit it",
        "Upload a file, wait for its validation and print what Ferry understood: encoding,\n"
        "delimiter, sheet, the mapping of each column with its confidence, the first errors.\n"
        "Nothing is written until --commit (all or nothing) or --commit-skip-invalid;\n"
        "--mode says what rows naming existing records do.\n"
        "e.g. ferry import orders.csv --dataset bookkeeping_records --account main "
        '--map "Total Price=sale_price" --commit',
    )
    imp.add_argument("file", help="the CSV or XLSX file")
    imp.add_argument("--dataset", required=True, help="the dataset to import into")
    imp.add_argument(
        "--account", required=True, metavar="ID", help="the account the rows belong to"
    )
    imp.add_argument("--sheet", help="XLSX: the sheet to read (default: the first with data)")
    imp.add_argument(
        "--map",
        action="append",
        metavar="COLUMN=FIELD",
        help='map a column to a field ("COLUMN=" leaves it out); validates again (repeatable)',
    )
    imp.add_argument(
        "--mode",
        choices=("insert", "upsert", "skip_existing"),
        default="insert",
        help="what a row whose key (the order id) names a record the account has already "
        "does: insert (default) counts it invalid; upsert updates that record with the "
        "file's columns (a rollback restores it); skip_existing leaves it out, the record "
        "untouched",
    )
    imp.add_argument(
        "--upload",
        choices=("auto", "direct", "stream"),
        default="auto",
        help="how the file goes up: direct to storage (POST /v1/uploads), streamed through "
        "the api, or auto: direct when the server offers it (default)",
    )
    commit = imp.add_mutually_exclusive_group()
    commit.add_argument(
        "--commit",
        action="store_true",
        help="commit all rows, or nothing if any row is invalid (exit 3)",
    )
    commit.add_argument(
        "--commit-skip-invalid", action="store_true", help="commit the valid rows only"
    )
    imp.add_argument(
        "--errors-report", metavar="PATH", help="save the failed rows to fix to this CSV file"
    )

    jobs = command(
        "jobs",
        cmd_jobs,
        "list your jobs, newest first",
        "Your exports and imports, newest first.",
    )
    jobs.add_argument("--kind", choices=("export", "import"), help="only this kind (default: both)")
    jobs.add_argument(
        "--status", help="comma-separated statuses, e.g. queued,running (default: all)"
    )
    jobs.add_argument("--limit", type=int, default=20, help="how many to list (default: 20)")

    rollback = command(
        "rollback",
        cmd_rollback,
        "undo a committed import",
        "Undo a committed import within its rollback window: the records it inserted are\n"
        "removed, those an upsert updated get every column back. Runs as a job on the\n"
        "server, with a progress bar here, until the import is rolled_back.",
    )
    rollback.add_argument("id", help="the import's id (see `ferry jobs --kind import`)")
    rollback.add_argument(
        "--confirm",
        action="store_true",
        help="roll back even if some of its records were edited since",
    )


def run(func: Command, args: argparse.Namespace) -> int:
    """Run one command; errors become a message on stderr and an exit code."""
    try:
        with Ferry(args.url, args.token) as ferry:
            return func(ferry, args)
    except _Usage as exc:
        _complain(str(exc))
        return USAGE
    except FerryError as exc:
        _complain(_message(exc))
        return exit_code(exc)
    except KeyboardInterrupt:
        _complain("interrupted (a job already started carries on on the server)")
        return 130


def _complain(message: str) -> None:
    sys.stderr.write(f"ferry: {message}\n")


def _message(exc: FerryError) -> str:
    if isinstance(exc, ApiError):
        lines = [exc.detail]
        lines += [f"  {e.field}: {e.message}" for e in exc.errors if e.message not in exc.detail]
        if isinstance(exc, Unauthorized):
            lines.append("  set FERRY_TOKEN (or --token) to a valid bearer token")
        return "\n".join(lines)
    return str(exc)


def parser(prog: str = "ferry-client") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Export and import with Ferry from a terminal or a script.",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=f"ferry-client {__version__}")
    add_commands(p.add_subparsers(dest="command", required=True, metavar="command"))
    return p


def main(argv: list[str] | None = None, prog: str = "ferry-client") -> NoReturn:
    args = parser(prog).parse_args(argv)
    raise SystemExit(args.func(args))
