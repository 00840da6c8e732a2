"""What a declared budget costs when it is never reached: `mailer send` with and without
`MAILER_QUOTA`, in one run, on the same list, to smtp-sink.

The budget is `1000000/day,100000/h` (never reached by the list): every message then takes a
slot from the ledger (mailer.sending.allowance), reserved in blocks, one transaction per block.
The issue's goal: at least 95 % of the throughput without one. The two are run in turns
(plain, budget, budget, plain, ...), each on a fresh copy of one imported SQLite list, so the
machine's noise falls on both alike; the ratio is of the medians.

    .venv/bin/python benchmarks/budget_bench.py [--count 20000] [--pairs 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.send_bench import (
    check_status,
    mailer_env,
    parse_args,
    prepared_sqlite,
    run_one,
    send_argv,
)
from tests.smtpsink import start_sink

QUOTA = "1000000/day,100000/h"
GOAL = 0.95


def one(options: object, database: Path, folder: Path, label: str, quota: str | None) -> float:
    """Messages per second of one whole `mailer send` on a fresh copy of the list."""
    copy = folder / f"{label}.db"
    shutil.copyfile(database, copy)
    with start_sink(dump=False) as sink:
        env = mailer_env(options, f"sqlite:///{copy}", sink)  # type: ignore[arg-type]
        if quota:
            env["MAILER_QUOTA"] = quota
        measured = run_one(send_argv(options), folder=folder, env=env,  # type: ignore[arg-type]
                           label=label, timeout=3600)
        check_status(measured.stdout(), options.count, label)  # type: ignore[attr-defined]
    copy.unlink()
    return float(options.count / measured.wall_s)  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args(argv)
    options = parse_args(["--count", str(args.count), "--parts", "mailer", "--snapshot"])
    assert not isinstance(options, dict)
    folders: list[Path] = []
    try:
        folder, database, _ = prepared_sqlite(options, args.count, "budget", folders)
        plain: list[float] = []
        budget: list[float] = []
        for pair in range(args.pairs):
            order = [None, QUOTA] if pair % 2 == 0 else [QUOTA, None]
            for quota in order:
                rate = one(options, database, folder, f"p{pair}-{'budget' if quota else 'plain'}",
                           quota)
                (budget if quota else plain).append(rate)
                print(f"pair {pair + 1}: {'with' if quota else 'without'} a budget: "
                      f"{rate:,.0f} msgs/s", flush=True)
        ratio = statistics.median(budget) / statistics.median(plain)
        print(json.dumps({"count": args.count, "plain": plain, "budget": budget,
                          "ratio": round(ratio, 3), "goal": GOAL}, indent=2))
        print(f"with a budget / without: {ratio:.2f} (goal ≥ {GOAL}: "
              f"{'met' if ratio >= GOAL else 'NOT met'})")
        return 0
    finally:
        for path in folders:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
