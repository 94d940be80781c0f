"""A validator for the part of JSON Schema (2020-12) that ``sdk-contract/schemas`` uses, so the
contract tests need no extra dependency. Unknown keywords (``format``, ``description``) are
annotations and ignored."""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return name == "number" or float(value).is_integer()
    return isinstance(value, _TYPES[name])


def errors(schema: Any, value: Any, root: Any, path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (``root`` resolves ``#/...`` references)."""
    if schema is True or schema == {}:
        return []
    out: list[str] = []
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        out += errors(target, value, root, path)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, n) for n in names):
            return [*out, f"{path}: {value!r} is not {schema['type']}"]
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    for sub in schema.get("allOf", []):
        out += errors(sub, value, root, path)
    if "anyOf" in schema and all(errors(s, value, root, path) for s in schema["anyOf"]):
        out.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema:
        matching = sum(not errors(s, value, root, path) for s in schema["oneOf"])
        if matching != 1:
            out.append(f"{path}: matches {matching} of oneOf, not exactly 1")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{path}: shorter than {schema['minLength']}")
        if len(value) > schema.get("maxLength", len(value)):
            out.append(f"{path}: longer than {schema['maxLength']}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            out.append(f"{path}: {len(value)} items, outside the allowed range")
        if "items" in schema:
            for i, item in enumerate(value):
                out += errors(schema["items"], item, root, f"{path}[{i}]")
    if isinstance(value, dict):
        out += [f"{path}: {k} is required" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                out += errors(props[name], item, root, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unexpected {name}")
            if "propertyNames" in schema:
                out += errors(schema["propertyNames"], name, root, f"{path}.{name}(name)")
        if len(value) > schema.get("maxProperties", len(value)):
            out.append(f"{path}: more than {schema['maxProperties']} properties")
    return out
