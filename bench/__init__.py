"""The benchmark of the rendered service (see docs/performance.md).

``run`` is the command (``python -m bench.run``, ``make bench``); ``processes`` renders, starts and
stops what it loads; ``measure`` loads it and reads /proc; ``analysis`` turns the load runs into
medians, ratios and verdicts; ``report`` writes the results. ``changes`` and ``micro`` are
benchmarks of their own, ``embed`` copies the results into the page.
"""

from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
# Renders, logs and scratch files of a run (under the repository's .cache/).
WORK = BENCH.parent / ".cache" / "bench"
