"""The encoding of a text upload: a byte order mark, else UTF-8 if it all decodes, else the
code page spreadsheet programs write that reads its non-ASCII text most plausibly.

The whole file is read once (C speed): to check UTF-8 to the last byte, and to collect
*evidence* — the lines holding non-ASCII bytes, wherever they are (a file can be plain
ASCII for its first megabytes). Each candidate code page decodes the evidence; one that
cannot (an undefined byte) is out, the others are scored by what they make of each
non-ASCII character: a Latin letter scores, a symbol inside a word (``Gr§e``, ``Za¿ó³æ``)
or an uppercase letter right after a lowercase one (``pÓ``) costs, anything stranger
(a control, a ligature, a modifier) costs more. Where two read the evidence equally
well, the likelier wins: Windows-1252, then Mac Roman, Windows-1250, ISO-8859-15 —
so a German file whose umlauts read the same in 1252 and 1250 is 1252, and a later
``æ`` is not stored as ``ć``.
"""

from __future__ import annotations

import codecs
import itertools
import re
import unicodedata
from pathlib import Path
from typing import BinaryIO

from services.core.imports.readers.layout import BOMS

# (codec, label), likeliest first: the order breaks ties.
CODE_PAGES = (
    ("cp1252", "windows-1252"),
    ("mac_roman", "mac-roman"),
    ("cp1250", "windows-1250"),
    ("iso8859_15", "iso-8859-15"),
)
EVIDENCE_BYTES = 64 * 1024
BLOCK = 1024 * 1024
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Symbols people type in tables; fine between words, odd inside one.
SYMBOLS = frozenset("€£¥§°±²³µ¶·¹º»«¼½¾¿¡–—‘’‚“”„†‡•…‰‹›™×÷©®¢¦¨ª¬¯´¸\u00a0")  # noqa: RUF001
CURRENCIES = frozenset("€£¥")
_NEAR_DIGIT = re.compile(r"\d[ \u00a0]?$|^[ \u00a0]?\d")


def detect_encoding(path: Path) -> tuple[str, str, str]:
    """``(codec, label, reason)``: BOM, else strict UTF-8 over the whole file, else the
    code page that reads the file's non-ASCII lines best (see the module docstring)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        for bom, codec, label in BOMS:
            if head.startswith(bom):
                return codec, label, "byte order mark"
        fh.seek(0)
        utf8, evidence = _read(fh)
    if utf8:
        return "utf-8", "utf-8", "valid UTF-8"
    codec, label = best_code_page(evidence)
    return codec, label, f"not UTF-8; reads best as {label}"


def _read(fh: BinaryIO) -> tuple[bool, bytes]:
    """Whether the file is UTF-8, and up to ``EVIDENCE_BYTES`` of its non-ASCII lines."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    utf8 = True
    evidence = bytearray()
    while block := fh.read(BLOCK):
        if utf8:
            try:
                decoder.decode(block)
            except UnicodeDecodeError:
                utf8 = False
        if len(evidence) < EVIDENCE_BYTES and not block.isascii():
            for line in itertools.filterfalse(bytes.isascii, block.splitlines()):
                evidence += line + b"\n"
                if len(evidence) >= EVIDENCE_BYTES:
                    break
        if not utf8 and len(evidence) >= EVIDENCE_BYTES:
            break
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    return utf8, bytes(evidence)


def _weight(text: str, at: int) -> int:
    char = text[at]
    before = text[at - 1] if at else " "
    after = text[at + 1] if at + 1 < len(text) else " "
    if char.isalpha() and "\u00c0" <= char <= "\u024f":
        if char.isupper() and before.islower():
            return -1  # glued to a lowercase letter it reads wrong ("pÓ")
        return 1 if before.isalpha() or after.isalpha() else 0  # a lone letter proves little
    inside = before.isalpha() and after.isalpha()
    if char in CURRENCIES and (
        _NEAR_DIGIT.search(text[max(at - 2, 0) : at]) or _NEAR_DIGIT.search(text[at + 1 : at + 3])
    ):
        return 1  # "12,50 €"
    if char in SYMBOLS:
        return -1 if inside else 0
    if unicodedata.category(char).startswith(("L", "S", "P")):
        return -1
    return -2  # controls, C1 codes and the like


def score(text: str) -> int:
    """How plausibly ``text`` reads (see the module docstring); higher is better."""
    return sum(_weight(text, m.start()) for m in _NON_ASCII.finditer(text))


def best_code_page(evidence: bytes) -> tuple[str, str]:
    """``(codec, label)`` of the code page that reads ``evidence`` best; ties to the likelier."""
    best: tuple[int, int, str, str] | None = None
    for rank, (codec, label) in enumerate(CODE_PAGES):
        try:
            text = evidence.decode(codec)
        except UnicodeDecodeError:
            continue
        candidate = (score(text), -rank, codec, label)
        if best is None or candidate > best:
            best = candidate
    if best is None:  # mac_roman decodes every byte, so this is never reached
        return CODE_PAGES[0]
    return best[2], best[3]
