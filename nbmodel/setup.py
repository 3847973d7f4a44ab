"""The one description of a modelled machine and the design it runs: :class:`Setup`, validated once.

``System``, the scenarios, the explorer, the benchmarks and the widgets all build their machines from a Setup,
so an option added here reaches every one of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .designs import DESIGNS, OPTIONS, Config
from .errors import ModelInputError
from .kernel import ARCHES
from .physmem import MAX_MEMORY, MemoryMap
from .units import parse_size

MAX_CPUS = 64


@dataclass(frozen=True)
class Setup:
    """A machine (arch, mode, memory, CPUs, seed, arm64 FWB and FEAT_TLBIRANGE) and a design with its switches
    and options (:data:`nbmodel.designs.OPTIONS`: ``unmapped_source``, ``populate`` and ``snp_no_direct_map``
    are Frank van der Linden's never-mapped memory and Sean Christopherson's mermap alternative)."""

    design: str = "filemap"
    arch: str = "x86"
    mode: str | None = None
    memory: str | int | MemoryMap = "4G"
    cpus: int = 2
    seed: int = 0
    switches: tuple = ()
    write: str = "refuse"
    large_folios: bool = False
    batch_flush: bool = False
    fwb: bool = True
    trace: bool = True
    large_zap: bool = False
    tlbirange: bool | None = None  # arm64 FEAT_TLBIRANGE; None: the arch default (nbmodel.kernel.Kernel)
    unmapped_source: bool = False  # guest_memfd NO_DIRECT_MAP folios from already-unmapped pageblocks (ALLOC_UNMAPPED)
    populate: str = "kmap_local"   # kvm_gmem_populate()'s copy: "kmap_local" (the direct map) or "mermap"
    snp_no_direct_map: bool = False  # what-if: an SNP VM may have a NO_DIRECT_MAP guest_memfd (mainline refuses)

    def __post_init__(self):
        if isinstance(self.switches, list):
            object.__setattr__(self, "switches", tuple(self.switches))
        if not isinstance(self.switches, tuple | frozenset | set):
            raise ModelInputError(f"switches must be a list of switch names, not {self.switches!r}")
        object.__setattr__(self, "switches", tuple(self.switches))
        if self.design not in DESIGNS:
            raise ModelInputError(f"unknown design {self.design!r}; choose one of {', '.join(DESIGNS)}")
        if self.arch not in ARCHES:
            raise ModelInputError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHES)}")
        if self.mode is not None and not isinstance(self.mode, str):
            raise ModelInputError(f"mode must be a string or None, not {self.mode!r}")
        for name in ("cpus", "seed"):
            value = getattr(self, name)
            if type(value) is not int:
                raise ModelInputError(f"{name} must be an integer, not {value!r} (the model is deterministic: "
                                      "give a seed)" if name == "seed" else f"{name} must be an integer, not {value!r}")
        if not 1 <= self.cpus <= MAX_CPUS:
            raise ModelInputError(f"cpus must be from 1 to {MAX_CPUS}, not {self.cpus}")
        if not isinstance(self.memory, MemoryMap):
            nbytes = parse_size(self.memory)
            if not 4 << 20 <= nbytes <= MAX_MEMORY:
                raise ModelInputError(f"memory must be from 4M to {MAX_MEMORY >> 30}G, not {self.memory!r}")
        for name in ("large_folios", "batch_flush", "fwb", "trace", "large_zap", "unmapped_source",
                     "snp_no_direct_map"):
            if not isinstance(getattr(self, name), bool):
                raise ModelInputError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.tlbirange is not None and not isinstance(self.tlbirange, bool):
            raise ModelInputError(f"tlbirange must be True, False or None, not {self.tlbirange!r}")
        if self.tlbirange and self.arch != "arm64":
            raise ModelInputError("tlbirange (FEAT_TLBIRANGE) is an arm64 CPU feature; x86 has none")
        if self.write not in OPTIONS["write"]:
            raise ModelInputError(f"write must be one of {OPTIONS['write']}, not {self.write!r}")
        if self.snp_no_direct_map and self.arch != "x86":
            raise ModelInputError("snp_no_direct_map is about SNP VMs, which exist on x86 only")
        self.config()  # validates the switches and the populate option
        if "arm64_no_bbml2" in self.switches and self.arch != "arm64":
            raise ModelInputError("the arm64_no_bbml2 switch needs arch arm64")

    def config(self) -> Config:
        """The design half: :class:`~nbmodel.designs.Config`."""
        return Config.make(self.design, self.switches, self.write, self.large_folios, self.batch_flush,
                           self.large_zap, self.unmapped_source, self.populate, self.snp_no_direct_map)

    def kernel_mode(self) -> str | None:
        return "blocks-no-bbml2" if "arm64_no_bbml2" in self.switches else self.mode

    def kwargs(self) -> dict:
        """``{field: value}``: ``System(**setup.kwargs())`` builds the same machine."""
        return asdict(self) if not isinstance(self.memory, MemoryMap) else {
            f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes) -> Setup:
        return Setup(**{**self.kwargs(), **changes})


FIELDS = tuple(f.name for f in fields(Setup))

__all__ = ["Setup", "FIELDS", "MAX_MEMORY", "MAX_CPUS"]
