"""Benchmark entry point: ``make bench`` (full county) or ``make bench-quick``.

Runs every approach (parcelzarr and the baselines users would otherwise pick) on Azurite
behind a latency proxy, checks that they agree, and writes ``results.json``, ``results.png``
and this benchmark's section of ``RESULTS.md``. See ``docs/bench.md`` and ``--help``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cli import main

if __name__ == "__main__":
    sys.exit(main())
