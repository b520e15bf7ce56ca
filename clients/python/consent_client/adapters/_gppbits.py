"""Bit-level reading shared by the GPP decoders: base64url to a bit string, fixed-width fields,
Fibonacci integers and ranges, each failure a :class:`ConsentFormatError` naming the section
and field.

A segment becomes one ``str`` of ``0``/``1`` through a single ``str.translate`` (C speed, linear),
and every field is a slice of it, so no per-bit Python objects are made. Variable-length fields
(Fibonacci codes) find their terminating ``11`` with ``str.find`` inside a bounded window, so a
hostile segment costs work linear in its length.
"""

from __future__ import annotations

from typing import Final

from ._common import ConsentFormatError

__all__ = ["MAX_ID", "BitCursor", "encode_fibonacci", "fail", "segment_bits"]

_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_BITS: Final = {ord(ch): format(i, "06b") for i, ch in enumerate(_ALPHABET)}

#: Ids (sections, vendors) are 16-bit in every IAB format; larger Fibonacci values are refused
#: before they are summed, which also bounds each code to a short window of bits.
MAX_ID: Final = 65_535
# Fibonacci numbers as GPP uses them (1, 2, 3, 5, ...): the largest code for an id <= MAX_ID
# has 23 data bits (F = 46368 is the 23rd), so a code with more is refused unread.
_FIB: Final = [1, 2]
while _FIB[-1] <= MAX_ID:
    _FIB.append(_FIB[-1] + _FIB[-2])
_MAX_FIB_BITS: Final = len(_FIB) - 1


def fail(section: str, field: str, problem: str) -> ConsentFormatError:
    """The one error shape of the GPP decoders: ``GPP <section> <field>: <problem>``."""
    return ConsentFormatError(f"GPP {section} {field}: {problem}")


def segment_bits(text: str, section: str, segment: str) -> str:
    """The bits of one base64url segment (no padding characters), 6 per character."""
    if not text:
        raise fail(section, segment, "is empty")
    bits = text.translate(_TO_BITS)
    if len(bits) != 6 * len(text):  # an unmapped character stayed one character long
        bad = next(ch for ch in text if ord(ch) not in _TO_BITS)
        raise fail(section, segment, f"contains {bad!r}, which is not base64url (A-Z a-z 0-9 - _)")
    return bits


class BitCursor:
    """Reads fields in order from a bit string, naming the section and field on failure."""

    __slots__ = ("bits", "pos", "section")

    def __init__(self, bits: str, section: str) -> None:
        self.bits = bits
        self.pos = 0
        self.section = section

    def take(self, width: int, field: str) -> str:
        end = self.pos + width
        if end > len(self.bits):
            raise fail(
                self.section, field,
                f"truncated: needs {width} bits at bit {self.pos}, only {len(self.bits) - self.pos} left",
            )
        chunk = self.bits[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, width: int, field: str) -> int:
        return int(self.take(width, field), 2) if width else 0

    def flag(self, field: str) -> bool:
        return self.take(1, field) == "1"

    def fibonacci_spans(self, field: str) -> list[tuple[int, int]]:
        """A Range(Fibonacci) as (first, last) spans: Int(12) entries, each a flag (single id or
        group), a Fibonacci offset from the previous id and, for a group, a Fibonacci length.
        Offsets and lengths are >= 1, so spans come out strictly increasing."""
        count = self.uint(12, f"{field} NumEntries")
        bits, pos, section = self.bits, self.pos, self.section
        spans: list[tuple[int, int]] = []
        last = 0
        # One tight loop: a hostile segment can hold ~80,000 entries, so field names for error
        # messages are only built when an error is raised.
        for n in range(1, count + 1):
            if pos >= len(bits):
                raise fail(section, f"{field} entry {n} IsGroup", f"truncated: needs 1 bit at bit {pos}, only 0 left")
            is_group = bits[pos] == "1"
            offset, pos = _fibonacci(bits, pos + 1, section, field, n, "offset")
            start = last + offset
            if is_group:
                length, pos = _fibonacci(bits, pos, section, field, n, "length")
                end = start + length
            else:
                end = start
            if end > MAX_ID:
                raise fail(section, field, f"entry {n} reaches id {end}, above {MAX_ID}")
            spans.append((start, end))
            last = end
        self.pos = pos
        return spans


def _fibonacci(bits: str, start: int, section: str, field: str, n: int = 0, part: str = "") -> tuple[int, int]:
    """(value, position after it) of the Fibonacci integer at ``start``: data bits for 1, 2, 3,
    5, ... (smallest first), ended by ``11``; always >= 1."""
    end = bits.find("11", start, start + _MAX_FIB_BITS + 1)
    if end == start:  # "11" = 1, the commonest code by far
        return 1, start + 2
    if end < 0:
        where = f"{field} entry {n} {part}" if n else field
        if len(bits) - start <= _MAX_FIB_BITS:
            raise fail(section, where, f"truncated: Fibonacci integer at bit {start} has no end")
        raise fail(section, where, f"Fibonacci integer at bit {start} exceeds {MAX_ID}")
    value = 0
    i = bits.find("1", start, end + 1)
    while i >= 0:
        value += _FIB[i - start]
        i = bits.find("1", i + 1, end + 1)
    if value > MAX_ID:
        where = f"{field} entry {n} {part}" if n else field
        raise fail(section, where, f"Fibonacci integer at bit {start} is {value}, above {MAX_ID}")
    return value, end + 2


def encode_fibonacci(value: int) -> str:
    """The Fibonacci code of ``value`` >= 1 (the inverse of :func:`_fibonacci`)."""
    marks = []
    for f in reversed(_FIB):
        if f <= value:
            marks.append("1")
            value -= f
        elif marks:
            marks.append("0")
    return "".join(reversed(marks)) + "1"
