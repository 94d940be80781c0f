"""The published contract (``sdk-contract/openapi``, ``sdk-contract/schemas``) against the code:
the documents parse, every route the apps register is documented (and nothing else), the
documented shapes have the fields the code's Structs have, and the vectors' messages are valid
messages. So the contract cannot drift from the services silently."""

from __future__ import annotations

import importlib
import json
import re
import socket
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.admin.attributes import schemas as attributes
from services.admin.identity import schemas as identity
from services.admin.imports import schemas as imports
from services.admin.keys import schemas as keys
from services.admin.queries import schemas as queries
from services.admin.segments import changes, manual, schemas
from services.admin.tags import schemas as tags
from services.admin.users import refs
from services.admin.users import service as users
from services.admin.webhooks import resync
from services.ingest import intake
from services.query import catalog, handlers
from shared.http import ErrorBody
from shared.messages import (
    CHANGE_OPS,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    WireMessage,
)
from shared.settings import Settings
from tests.sdk.jsonschema_subset import errors
from tests.sdk.vectors import load_vectors, wire_message

CONTRACT = Path(__file__).resolve().parents[2] / "sdk-contract"
SERVICES = ("ingest", "query", "admin")
MESSAGES = json.loads((CONTRACT / "schemas" / "ingest-messages.schema.json").read_text())
METHODS = {"get", "post", "put", "patch", "delete"}


def openapi(service: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CONTRACT / "openapi" / f"{service}.openapi.json").read_text())
    return doc


def resolve(doc: dict[str, Any], ref: str, base: Path) -> Any:
    """The target of ``ref``: ``#/...`` in ``doc``, or ``file.json#/...`` relative to ``base``."""
    file, _, pointer = ref.partition("#")
    target = json.loads((base / file).read_text()) if file else doc
    for part in pointer.removeprefix("/").split("/") if pointer else ():
        target = target[part]
    return target


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs_in(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs_in(v)]
    return []


def _template(path: str) -> str:
    """``/v1/users/{user_id:str}`` and ``/v1/users/{userId}`` both as ``/v1/users/{}``."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def dummy_settings() -> Settings:
    return Settings(
        database_url="postgresql://nobody@127.0.0.1:9/none", redis_url="redis://127.0.0.1:9/0"
    )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def app_routes(service: str) -> set[tuple[str, str]]:
    """(path template, method) of every route the service's app registers, without litestar's
    own (its generated schema pages), the admin service's web console (HTML pages, not API)
    and the implicit OPTIONS/HEAD."""
    module = importlib.import_module(f"services.{service}.app")
    app = module.create_app(dummy_settings())
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if handler.fn.__module__.startswith(("litestar.", "services.admin.console.")):
                continue
            for method in handler.http_methods:
                if method not in ("OPTIONS", "HEAD"):
                    found.add((_template(route.path), method.lower()))
    return found


def documented_routes(service: str) -> set[tuple[str, str]]:
    return {
        (_template(path), method)
        for path, item in openapi(service)["paths"].items()
        for method in item
        if method in METHODS
    }


@pytest.mark.parametrize("service", SERVICES)
def test_openapi_document_is_3_1_and_every_reference_resolves(service: str) -> None:
    doc = openapi(service)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["paths"]
    for ref in refs_in(doc):
        assert resolve(doc, ref, CONTRACT / "openapi") is not None, ref
    for ref in refs_in(MESSAGES):
        assert resolve(MESSAGES, ref, CONTRACT / "schemas") is not None, ref
    for item in doc["paths"].values():
        for method, op in item.items():
            if method in METHODS:
                assert op["operationId"] and op["responses"], (method, op)
    assert set(doc["components"]["schemas"]["Error"]["properties"]) == {"error", "field"}


@pytest.mark.parametrize("service", SERVICES)
def test_creating_the_app_connects_nowhere(service: str, no_network: None) -> None:
    assert app_routes(service)


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_is_documented_and_every_documented_route_exists(service: str) -> None:
    registered, documented = app_routes(service), documented_routes(service)
    assert registered - documented == set(), "routes missing from the OpenAPI document"
    assert documented - registered == set(), "documented routes the app does not have"


def _props(doc: dict[str, Any], name: str) -> set[str]:
    return set(doc["components"]["schemas"][name]["properties"])


def _fields(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


STRUCTS: list[tuple[str, str, type[msgspec.Struct]]] = [
    ("ingest", "Rejection", intake.Rejection),
    ("ingest", "BatchResult", intake.BatchResult),
    ("query", "SegmentRef", catalog.SegmentRef),
    ("query", "UserSegments", handlers.UserSegments),
    ("query", "AnonymousSegments", handlers.AnonymousSegments),
    ("query", "Membership", handlers.Membership),
    ("query", "CheckRequest", handlers.CheckBody),
    ("query", "CheckResult", handlers.CheckResult),
    ("admin", "Segment", schemas.Segment),
    ("admin", "SegmentCreate", schemas.SegmentCreate),
    ("admin", "SegmentUpdate", schemas.SegmentUpdate),
    ("admin", "SegmentList", schemas.SegmentList),
    ("admin", "MembersPage", schemas.MembersPage),
    ("admin", "UserRefs", refs.UserRefs),
    ("admin", "MembersChange", manual.MembersChange),
    ("admin", "Change", changes.Change),
    ("admin", "ChangesPage", changes.ChangesPage),
    ("admin", "UserProfile", users.UserProfile),
    ("admin", "SegmentSummary", users.SegmentSummary),
    ("admin", "CompanySummary", users.CompanySummary),
    ("admin", "TagSummary", users.TagSummary),
    ("admin", "Tag", tags.Tag),
    ("admin", "TagCreate", tags.TagCreate),
    ("admin", "TagUsersChange", tags.TagUsersChange),
    ("admin", "PreviewRequest", queries.PreviewRequest),
    ("admin", "Preview", queries.Preview),
    ("admin", "UserSummary", queries.UserSummary),
    ("admin", "UserPage", queries.UserPage),
    ("admin", "ExplainedSegment", queries.SegmentRef),
    ("admin", "Explanation", queries.Explanation),
    ("admin", "IdentityVerification", identity.IdentityVerification),
    ("admin", "IdentityVerificationUpdate", identity.IdentityVerificationUpdate),
    ("admin", "IdentityVerificationChanged", identity.IdentityVerificationChanged),
    ("admin", "IdentitySecretRotate", identity.IdentitySecretRotate),
    ("admin", "IdentitySecret", identity.IdentitySecret),
    ("admin", "AttributeInfo", attributes.AttributeInfo),
    ("admin", "AttributeList", attributes.AttributeList),
    ("admin", "AttributeTypeUpdate", attributes.AttributeTypeUpdate),
    ("admin", "AttributeTypeChange", attributes.AttributeTypeChange),
    ("admin", "AttributeWarning", attributes.AttributeWarning),
    ("admin", "WarningPage", attributes.WarningPage),
    ("admin", "Import", imports.Import),
    ("admin", "ImportList", imports.ImportList),
    ("admin", "ImportStart", imports.ImportStart),
    ("admin", "KeyRotate", keys.KeyRotate),
    ("admin", "Keys", keys.Keys),
    ("admin", "RetiringKey", keys.RetiringKey),
    ("admin", "RotatedKey", keys.RotatedKey),
    ("admin", "ResyncResult", resync.ResyncResult),
]


@pytest.mark.parametrize(
    ("service", "name", "struct"), STRUCTS, ids=[f"{s}.{n}" for s, n, _ in STRUCTS]
)
def test_documented_shapes_have_the_fields_of_the_code(
    service: str, name: str, struct: type[msgspec.Struct]
) -> None:
    assert _props(openapi(service), name) == _fields(struct)


def test_error_shape_is_the_shared_one() -> None:
    for service in SERVICES:
        assert _props(openapi(service), "Error") == _fields(ErrorBody)
    failure = openapi("ingest")["components"]["schemas"]["BatchFailure"]["allOf"][1]
    assert _fields(intake.BatchFailure) == {"error", "field"} | set(failure["properties"])


def test_message_schema_has_the_wire_fields_and_limits() -> None:
    defs = MESSAGES["$defs"]
    documented = set(defs["Common"]["properties"])
    for kind in ("Identify", "Group", "Track", "Alias", "Page", "Screen"):
        documented |= set(defs[kind]["allOf"][1]["properties"])
    assert documented == _fields(WireMessage)
    ops = {next(iter(alt["properties"])) for alt in defs["ChangeObject"]["oneOf"]}
    assert ops == CHANGE_OPS
    assert defs["Batch"]["properties"]["batch"]["maxItems"] == MAX_BATCH_MESSAGES
    limits = f"{MAX_MESSAGE_BYTES // 1024} KB per message, {MAX_REQUEST_BYTES // 1024} KB"
    assert limits in MESSAGES["description"]
    assert limits in openapi("ingest")["info"]["description"].replace(" (413)", "")


def test_every_vector_message_is_a_valid_message() -> None:
    root = MESSAGES
    for vector in load_vectors():
        for step in vector["steps"]:
            msg = wire_message(step)
            assert errors(root, msg, root) == [], (vector["name"], msg)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "identify", "traits": {"a": 1}},  # no id
        {"type": "track", "userId": "u"},  # no event
        {"type": "group", "userId": "u"},  # no groupId
        {"type": "alias", "userId": "u"},  # no previousId
        {"type": "identify", "userId": "u", "traits": {"n": 1}, "segments": "beta"},
        {"type": "nope", "userId": "u"},
        {"type": "identify", "userId": ""},
    ],
)
def test_invalid_messages_are_invalid(bad: dict[str, Any]) -> None:
    assert errors(MESSAGES, bad, MESSAGES) != []
    assert errors(MESSAGES, {"batch": [bad]}, MESSAGES) != []
