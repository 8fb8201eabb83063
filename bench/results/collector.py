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
    - a case's references (bench.worker.evidence.gather_evidence): each fresh model and load_adapter makes
      thousands of module objects, and the passes they set off walk the subject, its adapters and the
      libraries' own objects too (about 0.3 s each on the 135M shape: a serve step's check 7.9 -> 7.0 s, a
      hotswap case's references 4.3 -> 2.9 s; reports/performance/serving_check.md)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
