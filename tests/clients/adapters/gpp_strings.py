"""GPP strings for the GPP tests: a header encoder and a one-section string around a section vector.

The encoder is checked against the IAB's header vectors (test_gpp.py), so a section vector
from a section-level test can be wrapped by :func:`gpp` and decoded whole.
"""

from __future__ import annotations

from consent_client.adapters.gpp_sections import SECTION_IDS

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def fibonacci(value: int) -> str:
    """`value` in Fibonacci coding (ending "11"), as the GPP header writes range offsets."""
    fibs = [1, 2]
    while fibs[-1] <= value:
        fibs.append(fibs[-1] + fibs[-2])
    marks = []
    for f in reversed(fibs):
        if f <= value:
            marks.append("1")
            value -= f
        elif marks:
            marks.append("0")
    return "".join(reversed(marks)) + "1"


def header(ids: list[int]) -> str:
    """A GPP header for ``ids`` (ascending), each as a single-id entry, padded like iabgpp-es."""
    bits = "000011" + "000001" + format(len(ids), "012b")
    last = 0
    for i in ids:
        bits += "0" + fibonacci(i - last)
        last = i
    bits += "0" * (-len(bits) % 8)
    bits += "0" * (-len(bits) % 6)
    return "".join(B64[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def gpp(name: str, section: str) -> str:
    return f"{header([SECTION_IDS[name]])}~{section}"
