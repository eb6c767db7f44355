"""`make bench`: every benchmark in turn; each writes its JSON result under benchmarks/results/.

    .venv/bin/python -m benchmarks.run [name ...]     # default: all
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = {
    "ingest": "benchmarks.ingest.bench",
    "export": "benchmarks.export.bench",
    "labelstudio": "benchmarks.labelstudio.bench",
    "encoder": "benchmarks.encoder.bench",
    "active_learning": "benchmarks.active_learning.bench",
    "label_noise": "benchmarks.label_noise.bench",
    "store": "benchmarks.store.bench",
}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmarks {unknown}; valid: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        try:
            module = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            if exc.name == BENCHMARKS[name]:
                print(f"== {name}: not present, skipped")
                continue
            raise
        print(f"== {name}")
        t0 = time.perf_counter()
        rc = module.main([])
        print(f"== {name}: rc={rc} in {time.perf_counter() - t0:.0f}s")
        if rc:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
