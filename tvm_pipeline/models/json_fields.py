"""Typed, field-named access to one object of a JSON config, so that every error names the bad field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from tvm_pipeline.errors import UserError

# How a Python type is called in a JSON file, for error messages.
JSON_KINDS: dict[type, str] = {
    Mapping: "a JSON object",
    list: "a JSON array",
    str: "a string",
    bool: "true or false",
    int: "an integer",
}


class JsonFields:
    """Typed access to one JSON object; rejects unknown keys so that typos do not pass silently."""

    def __init__(self, data: Any, source: str, prefix: str, schema: type) -> None:
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a JSON object, got {data!r}")
        known = {field.name for field in fields(schema)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{source}: {prefix}{unknown[0]}: unknown field; known fields: {sorted(known)}")
        self.data, self.source, self.prefix = data, source, prefix

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """The value of `key`, which must be present and of `kind` (bool is not accepted as a number)."""
        if key not in self.data:
            raise UserError(f"{self.source}: {self.prefix}{key}: missing")
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            expected = JSON_KINDS.get(kind, "a number") if isinstance(kind, type) else "a number"
            raise UserError(f"{self.source}: {self.prefix}{key}: expected {expected}, got {value!r}")
        return value

    def integer(self, key: str, minimum: int) -> int:
        """An integer field that must be >= `minimum`."""
        value = self.get(key, int)
        if value < minimum:
            raise UserError(f"{self.source}: {self.prefix}{key}: {value} is below the minimum {minimum}")
        return value

    def number(self, key: str) -> float:
        """An int or float field, as float."""
        return float(self.get(key, (int, float)))
