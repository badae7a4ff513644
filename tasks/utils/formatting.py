"""How numbers are written: one rule for signed numbers, one for counts, one for amounts of memory."""

from __future__ import annotations


def signed(value: float, digits: int) -> str:
    """``+0.42``; a value that rounds to zero but is not zero keeps one significant digit
    (``-3e-05``): a bound just below 0 must not read as 0 beside the word "worse"."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return f"{value:+.1g}" if value != 0 else "+0." + "0" * digits
    return text


def count(value: float | None) -> str:
    """Items, parameters, MACs: ``5``, ``50,000``, ``1.547M``, ``2.227G``; ``–`` when unknown."""
    if value is None:
        return "–"
    for scale, prefix in ((1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.3f}{prefix}"
    return f"{value:,}"


def byte_size(size: float) -> str:
    """Memory and disk space in messages: ``16 MB``, ``1,024 MB``, ``3.2 GB`` (from 1 GiB)."""
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:,.0f} MB"
