"""nbmodel: an executable model of the Linux kernel direct map, the page cache and guest_memfd.

The core (everything outside :mod:`nbmodel.viz`) is pure Python and imports no view library.
"""

__version__ = "0.1.0"
