"""The cyclic garbage collector paused around work that makes many new objects and no cycles worth a pass."""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def collector_paused():
    """The collector off inside, back on after if it was on. Its passes walk every tracked object of the
    process, and are set off by how many new ones were made, so work that makes millions of objects holding no
    cycles pays for passes that find nothing:
    - building a results file's records (a third of the time of loading 4,000 cases; bench.results.store);
    - compare and gate while they judge: each finding made set off passes over every loaded case (about 3 s of
      CPU at 20,000 cases);
    - a serve step's check (bench.engine.serving.evidence): each reference load_adapter makes thousands of
      module objects, and the passes they set off walk the subject, its adapters and the libraries' own
      objects too (about 0.3 s each on the 135M shape, 0.4 s of a 7 s check:
      reports/performance/serving_check.md)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
