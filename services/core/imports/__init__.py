"""Imports: read uploaded CSV/XLSX files, map their columns, validate, stage, commit, undo.

- ``readers``  — file type, encoding, delimiter, header row, sheet; records in chunks
- ``mapping``  — source columns → dataset fields (remembered, alias, normalised, fuzzy)
- ``validate`` — vectorised checks per column of a chunk, errors with line numbers
- ``staging``  — the per-import staging table, duplicate checks, error report, preview
- ``commit``   — one INSERT … SELECT guarded by the batch row; rollback of a batch
- ``pipeline`` — the validation run that ties them together (called by the worker)
"""
