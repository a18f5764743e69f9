"""What `--json` prints, one convention for every command.

snake_case keys as in the protos, numbers as numbers (protobuf's JSON mapping would print 64-bit
integers as strings and keys in camelCase), an unset optional field as null, actions as their
labels (Short, Hold, Long), durations in milliseconds with `_ms` in the key.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tactical.actions import action_label


def message_dict(message: Message) -> dict[str, Any]:
    """Every field of `message`, converted as the module docstring says (bytes fields are left out)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_BYTES:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        elif field.has_presence and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_dict(value)
    if field.type == FieldDescriptor.TYPE_FLOAT:  # float32: its 7 significant digits, not 0.10000000149
        return float(f"{value:.7g}")
    if field.type == FieldDescriptor.TYPE_ENUM:
        return action_label(value) if field.enum_type.name == "Action" else field.enum_type.values_by_number[value].name
    return value


def print_json(data: Any) -> None:
    """Indented JSON on stdout; NaN and infinities (not JSON) become null."""
    json.dump(_finite(data), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if data == data and abs(data) != float("inf") else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data
