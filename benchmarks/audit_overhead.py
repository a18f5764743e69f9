"""Audit-log overhead: decision latency with the audit log on and off, measured side by side.

    python benchmarks/audit_overhead.py [--slices 30] [--slice-seconds 1]

Two real local clusters run at once, identical but for the audit log (on: the packaged
setting; off: paths.audit_log empty), loaded in alternating slices (benchmarks/paired.py) with
one client stream, then 8. Target (issue 6): the audit log moves the decision p99 by no more
than 10%.
"""

from __future__ import annotations

import argparse
from pathlib import Path

STREAMS = (1, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=30, help="load slices per cluster and stream count")
    parser.add_argument("--slice-seconds", type=float, default=1.0)
    parser.add_argument("--flush-ms", type=float, default=None,
                        help="serving.audit_flush_ms of the audited cluster (default: the packaged setting)")
    parser.add_argument("--audit-dir", default=None, help="directory of the audit log (default: a temporary one)")
    args = parser.parse_args()

    from paired import run_paired

    def audit_on(directory: Path) -> dict:
        sections: dict = {"serving": {"audit_flush_ms": args.flush_ms}} if args.flush_ms else {}
        if args.audit_dir:
            sections["paths"] = {"audit_log": str(Path(args.audit_dir) / "audit.sqlite")}
        return sections

    result = run_paired({"on": audit_on, "off": lambda directory: {"paths": {"audit_log": ""}}}, STREAMS,
                        slices=args.slices, slice_seconds=args.slice_seconds)
    print(result.table("audit", ("on", "off"), STREAMS))
    print()
    print(result.verdicts("on", "off", STREAMS, 0.10, "from the audit log"))


if __name__ == "__main__":
    main()
