"""Kernel errno names and the model's own error for bad input.

Kernel functions in the model return ``0`` or a negative errno, as the kernel does. Misuse of the model itself
(a PFN outside memory, a double free, removing what is not there) raises :class:`ModelInputError` and leaves
the model's state exactly as it was.
"""

from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """The errno values the modelled kernel paths can return (``include/uapi/asm-generic/errno-base.h``)."""

    EPERM = 1
    ENOENT = 2
    ENOMEM = 12
    EFAULT = 14
    EBUSY = 16
    EEXIST = 17
    ENODEV = 19
    EINVAL = 22
    EFBIG = 27
    ESPIPE = 29
    ENOSYS = 38
    EOPNOTSUPP = 95


def errno_name(ret: int) -> str:
    """``-17`` -> ``"EEXIST"``; ``0`` -> ``"0"``; a positive value -> its decimal string."""
    if ret < 0:
        return Errno(-ret).name
    return str(ret)


class ModelInputError(ValueError):
    """The model was asked something no kernel caller could ask; nothing was changed."""
