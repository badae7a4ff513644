"""How numbers are written: one rule for signed numbers, one for counts, one for amounts of memory."""

from __future__ import annotations


def signed(value: float, digits: int) -> str:
    """``+0.42``; a value that rounds to zero but is not zero gets the decimals of its first
    significant digit (``-0.00003``): a bound just below 0 must not read as 0 beside the word
    "worse", nor in scientific notation beside fixed-point numbers."""
    text = f"{value:+.{digits}f}"
    if float(text) != 0:
        return text
    if value == 0:
        return f"{0:+.{digits}f}"  # -0.0 too
    first = f"{value:.0e}"  # e.g. "-3e-05": the exponent is the place of the first digit
    return f"{float(first):+.{-int(first.split('e')[1])}f}"


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
