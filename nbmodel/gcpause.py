"""The cyclic garbage collector paused around work that allocates many objects that stay alive."""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off while the body runs, back on after (if it was on). A large step allocates
    millions of objects that stay alive (folios, events, marks), and every full collection walks all of them
    again: a 1G frame of the stepper took 2.7 s with it on, 1.0 s off. Reference counting still frees everything
    else at once. Benchmarks time their loops this way too, as ``timeit`` does.

    On the way out, the objects in the younger generations (what the body allocated, and anything young before it)
    go to the oldest without a collection (``gc.freeze()`` then ``gc.unfreeze()``, each a splice of lists): turned
    back on with them still in the youngest, the collector's next run walks every one of them (4-6% of an explorer
    search of 11,100 states), and most are alive. Cycles among them are still found, by the next full collection.
    Skipped when the process has frozen objects of its own: ``gc.unfreeze()`` would hand those back too."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


__all__ = ["gc_paused"]
