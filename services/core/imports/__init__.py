"""Imports: read uploaded CSV/XLSX files, map their columns, validate, stage, commit, undo.

- ``readers``  — file type, encoding, delimiter, header row, sheet; records in chunks
- ``mapping``  — source columns → dataset fields (remembered, alias, normalised, fuzzy)
- ``validate`` — Arrow checks per column of a chunk, errors with line numbers
- ``staging``  — the per-import staging table, duplicate checks, error report, preview
- ``commit``   — one COPY (or INSERT … SELECT) guarded by the batch row; rollback
- ``pipeline`` — the validation run that ties them together (called by the worker)

A process that validates imports calls ``tune_process`` once when it starts.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import gc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.core.settings import Settings

# Cyclic-GC thresholds while validating (defaults 700, 10, 10): see tune_process.
GC_THRESHOLDS = (100_000, 50, 100)
# glibc's mallopt(M_MMAP_THRESHOLD): blocks from this size up are mapped and unmapped.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024


def tune_process(settings: Settings) -> None:
    """Set the interpreter-wide knobs the import readers rely on; once, at start-up.

    Both are globals of the process, shared by every thread that reads an upload, so
    they are set once here rather than by each read:

    - ``csv.field_size_limit``: the longest value a CSV record may hold
      (``import_max_field_chars``); a row with a longer one becomes a row error.
    - the cyclic GC's thresholds: reading and checking churn millions of short-lived
      rows, and the cycle detector running every 700 allocations cost about 30% of
      the time. Reference counting still frees every row; only cycles wait longer.
    - memory that goes back to the system: Arrow allocates from malloc (not its own
      mimalloc heaps, one per thread, which keep what they freed), and malloc maps
      blocks of ``MMAP_THRESHOLD`` and more on their own (glibc raises that threshold
      as large blocks are freed, then keeps them in its heap: a worker's peak grew
      from 263 to 324 MiB between a 30k- and a 300k-row import).
    """
    import pyarrow as pa

    csv.field_size_limit(settings.import_max_field_chars)
    gc.set_threshold(*GC_THRESHOLDS)
    pa.set_memory_pool(pa.system_memory_pool())
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own defaults
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
