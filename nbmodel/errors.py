"""The kernel's result conventions inside the model, and the model's own error for bad input.

Kernel functions in the model return what the kernel's return: ``0`` or a negative errno (``-Errno.EINVAL``,
never a bare ``-22``), a count, a :class:`VmFault` from a fault handler, or :data:`OOPS` from a path that took a
kernel page fault. Names (``"EINVAL"``, ``"SIGBUS"``, ``"oops"``) appear only at the edge, where
:func:`nbmodel.system.step_result` turns a step's answer into the string users, scenarios and the explorer
read. Misuse of the model itself (a PFN outside memory, a double free, removing what is not there) raises
:class:`ModelInputError` and leaves the model's state exactly as it was.
"""

from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """The errno values the modelled kernel paths can return (``include/uapi/asm-generic/errno-base.h`` and
    ``errno.h``). A path returns the negative value, as the kernel does: ``return -Errno.ENOMEM``."""

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
    EHWPOISON = 133


def errno_name(ret: int) -> str:
    """``-Errno.EEXIST`` -> ``"EEXIST"``; ``0`` -> ``"0"``; a positive value (a count) -> its decimal string."""
    if ret < 0:
        return Errno(-ret).name
    return str(ret)


class VmFault(enum.IntFlag):
    """``vm_fault_t``: what a ``vm_operations_struct.fault`` handler returns, the bits of ``enum
    vm_fault_reason`` (``include/linux/mm_types.h``) the modelled handlers and :func:`vmf_error` use. A handler
    that found the page returns ``LOCKED`` (``vmf->page`` set, the folio locked); ``OOM`` and ``SIGBUS`` are what
    the architecture's fault code turns into the OOM killer or a ``SIGBUS`` for the task."""

    OOM = 0x000001
    SIGBUS = 0x000002
    HWPOISON = 0x000010
    SIGSEGV = 0x000040
    LOCKED = 0x000200


#: ``VM_FAULT_ERROR`` (``include/linux/mm_types.h``) as far as the model has the bits: the handler failed.
VM_FAULT_ERROR = VmFault.OOM | VmFault.SIGBUS | VmFault.SIGSEGV | VmFault.HWPOISON


def vmf_error(err: int) -> VmFault:
    """``vmf_error()`` (``include/linux/mm.h``): a fault handler's negative errno as a ``vm_fault_t``: -ENOMEM
    is ``VM_FAULT_OOM``, -EHWPOISON ``VM_FAULT_HWPOISON``, anything else ``VM_FAULT_SIGBUS``."""
    if type(err) is not int or err >= 0:
        raise ModelInputError(f"vmf_error() takes a negative errno, not {err!r}")
    if err == -Errno.ENOMEM:
        return VmFault.OOM
    if err == -Errno.EHWPOISON:
        return VmFault.HWPOISON
    return VmFault.SIGBUS


class Access(enum.StrEnum):
    """What one kernel access through the direct map met (:meth:`nbmodel.kernel.Kernel.kernel_access`): a valid
    entry (``OK``), a TLB entry whose page-table entry is no longer valid (``STALE``), or a not-present entry:
    a kernel page fault (``OOPS``). The values are the words the book prints for a ``kernel_read`` step."""

    OK = "ok"
    STALE = "stale"
    OOPS = "oops"


#: What a kernel path returns when one of its direct-map accesses oopsed: the access outcome that killed it.
#: An oops is not a return value in the kernel (the task dies in the fault handler), but it is one here, and
#: not an exception, for two reasons: the model unwinds the dying path's cleanup (unlock, put, the end of a
#: batched fallocate()) so the machine stays usable for the next step, as scenarios and the explorer need,
#: which an exception would skip unless every path had a ``try``/``finally``; and a path's oops must not be
#: confused with an errno or a count, which this member of :class:`Access` (a ``str``, never an ``int``) cannot
#: be. Test for it with ``is OOPS``.
OOPS = Access.OOPS


class ModelInputError(ValueError):
    """The model was asked something no kernel caller could ask; nothing was changed."""
