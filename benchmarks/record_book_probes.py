"""Record the kernel probes chapter 7 shows, so that building the book probes nothing.

    python benchmarks/record_book_probes.py          (as root for the cross-check's PFNs; writes the two files)

Writes ``benchmarks/probes-6.18.json`` (``realkernel.record_probes(16 MiB)``: memfd, guest_memfd and
memfd_secret, and the zeroing bandwidth) and ``benchmarks/crosscheck-6.18.json`` (``crosscheck.crosscheck(8 MiB)``),
each with the kernel release, CPU model, CPU count and date. The book reads them through
``realkernel.probes_for_book()`` and ``crosscheck.crosscheck_for_book()``; NBMODEL_LIVE=1 probes live instead.
"""

import sys

from nbmodel import crosscheck, realkernel


def main() -> int:
    rec = realkernel.record_probes(16 << 20)
    realkernel.save_probes(rec, realkernel.RECORDED_PROBES)
    print(rec.label)
    for r in rec:
        print(realkernel.format_result(r))
    cross = crosscheck.crosscheck(8 << 20)
    crosscheck.save_crosscheck(cross, crosscheck.RECORDED_CROSSCHECK)
    print(cross.report())
    print(f"wrote {realkernel.RECORDED_PROBES} and {crosscheck.RECORDED_CROSSCHECK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
