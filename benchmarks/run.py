"""`make bench`: every benchmark in turn, each in its own process; each writes its JSON under benchmarks/results/.

    .venv/bin/python -m benchmarks.run [name ...]     # default: all; names below
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS: dict[str, list[str]] = {
    "ingest": ["benchmarks.ingest.bench"],
    "store": ["benchmarks.store.bench"],
    "export": ["benchmarks.export.run"],
    "labelstudio": ["benchmarks.labelstudio.bench"],
    "encoder": ["benchmarks.encoder.run"],
    "active_learning": ["benchmarks.active_learning.run", "benchmarks.active_learning.round"],
    "label_noise": ["benchmarks.label_noise.bench"],
}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmarks {unknown}; valid: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        for module in BENCHMARKS[name]:
            print(f"== {name}: python -m {module}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run([sys.executable, "-m", module], check=False).returncode
            print(f"== {name}: rc={rc} in {time.perf_counter() - t0:.0f}s", flush=True)
            if rc:
                failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
