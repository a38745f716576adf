"""Run every benchmark: ``python -m bench [--seconds N] [--rounds N] [--json]``.

Each entry of ``BENCHMARKS`` is a module with ``main(argv) -> int`` that accepts at
least ``--seconds``, ``--rounds`` and ``--json``; the arguments given here are passed
to each of them unchanged. Add new benchmarks to the list.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

BENCHMARKS: list[str] = [
    "bench.ledger",
    "bench.evaluate",
    "bench.metered_load",
    "bench.mandates",
    "bench.replica_lag",
    "bench.access_requests",
    "bench.revocation",
    "bench.pep",
    "bench.audit",
    "bench.console",
    "bench.decision_log",
]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    status = 0
    for name in BENCHMARKS:
        print(f"### {name}", flush=True)
        module = importlib.import_module(name)
        status = max(status, int(module.main(args)))
        print(flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
