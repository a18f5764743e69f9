"""Generate the Python stubs of protos/tactical/v1/*.proto into tactical/v1/ (or --out).

Run after editing a .proto:  python protos/generate.py
tests/test_protos.py fails while the committed stubs differ from what this produces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over every .proto; return the files written under `out`."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "tactical" / "v1").glob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
            *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out / "tactical" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: the repository)")
    written = generate(parser.parse_args().out)
    print("\n".join(str(p) for p in written), file=sys.stderr)


if __name__ == "__main__":
    main()
