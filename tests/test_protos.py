"""The wire contract: committed stubs match the .proto files; enums follow proto3 style."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from tactical.v1 import common_pb2

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("protos_generate", REPO / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_are_not_stale(tmp_path):
    fresh = _generator().generate(tmp_path)
    assert fresh, "protoc produced nothing"
    committed = REPO / "tactical" / "v1"
    names = {p.name for p in fresh}
    committed_names = {p.name for p in committed.glob("*_pb2*.py*")}
    assert names == committed_names, "stub files added or removed: run protos/generate.py"
    for path in fresh:
        assert path.read_bytes() == (committed / path.name).read_bytes(), (
            f"tactical/v1/{path.name} is stale against the .proto: run `python protos/generate.py`")


def test_enums_have_a_zero_unspecified_value():
    for proto in (REPO / "protos" / "tactical" / "v1").glob("*.proto"):
        module = importlib.import_module(f"tactical.v1.{proto.stem}_pb2")
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            assert enum.values[0].number == 0 and enum.values[0].name.endswith("_UNSPECIFIED"), enum.name


def test_action_order_matches_probability_order():
    assert [common_pb2.ACTION_SHORT, common_pb2.ACTION_HOLD, common_pb2.ACTION_LONG] == [1, 2, 3]


def _is_field(line: str) -> bool:
    s = line.split("//")[0].strip()
    return s.endswith(";") and "=" in s and not s.startswith(("option", "syntax", "package", "import"))


def test_every_field_is_documented():
    """Each field carries a comment, or follows one (a run of fields like open/high/low/close shares it)."""
    for proto in (REPO / "protos" / "tactical" / "v1").glob("*.proto"):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            if not _is_field(line) or "//" in line:
                continue
            j = i - 1
            while j >= 0 and _is_field(lines[j]) and "//" not in lines[j]:
                j -= 1
            assert "//" in lines[j], f"{proto.name}:{i + 1} undocumented field: {line.strip()}"
