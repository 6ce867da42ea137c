"""Exports: what to export (``spec``), how to write each format, one entry point (``run``)."""
