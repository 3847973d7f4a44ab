"""Sizes and address arithmetic shared by every part of the model (4 KiB base pages)."""

from __future__ import annotations

import re

from .errors import ModelInputError

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PTRS_PER_TABLE = 512
PAGES_2M = 512
PAGES_1G = 512 * 512
PMD_ORDER = 9

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
#: The largest size or offset the model accepts: the largest ``loff_t`` (``LLONG_MAX``), as no file size or
#: offset a program can pass to the kernel is larger.
MAX_SIZE = (1 << 63) - 1


def parse_size(text: str | int, limit: int = MAX_SIZE) -> int:
    """``"4G"`` -> bytes; integers pass through. Raises ModelInputError on anything else, and on sizes above
    ``limit`` (default :data:`MAX_SIZE`, 2**63 - 1, the largest ``loff_t``; a ``u64`` ABI field passes
    2**64 - 1 and lets the kernel judge the value)."""
    if type(text) is int and 0 <= text <= limit:  # the common case, first
        return text
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ModelInputError(f"not a size: {_short(text)} (use e.g. 4096, 64K, 2M, 4G)")
    if isinstance(text, int):
        if text < 0:
            raise ModelInputError(f"negative size: {_short(text)}")
        value = text
    else:
        m = re.fullmatch(r"\s*(\d{1,20})\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
        if not m:
            raise ModelInputError(f"not a size: {_short(text)} (use e.g. 4096, 64K, 2M, 4G)")
        value = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if value > limit:
        what = "2**63 - 1 bytes (the largest loff_t)" if limit == MAX_SIZE else f"{limit} bytes"
        raise ModelInputError(f"size {_short(text)} is more than {what}")
    return value


def _short(value) -> str:
    """``repr(value)``, cut to 60 characters so that a huge input gives a one-line message."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else f"<{value.bit_length()}-bit int>"
    return text if len(text) <= 60 else text[:57] + "..."


def parse_signed_size(text: str | int) -> int:
    """As :func:`parse_size`, but a leading ``-`` is allowed: an ``loff_t`` the kernel itself rejects."""
    if type(text) is int and text <= MAX_SIZE:  # the common case, first
        return text
    if isinstance(text, str) and text.strip().startswith("-"):
        return -parse_size(text.strip()[1:])
    if isinstance(text, int) and not isinstance(text, bool) and text < 0:
        return text
    return parse_size(text)


def pages(nbytes: int) -> int:
    """Whole 4 KiB pages in ``nbytes``; raises if not page aligned."""
    if nbytes % PAGE_SIZE:
        raise ModelInputError(f"{nbytes} bytes is not a multiple of the 4 KiB page size")
    return nbytes // PAGE_SIZE


def human(nbytes: int) -> str:
    """Bytes as the largest exact binary unit: 2097152 -> '2M'."""
    for unit in ("T", "G", "M", "K"):
        size = _UNITS[unit]
        if nbytes and nbytes % size == 0:
            return f"{nbytes // size}{unit}"
    return str(nbytes)
