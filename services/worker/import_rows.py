"""An import's rows of users or segment members as messages, and what each row did.

Each data row becomes an identify message (messageId ``import:<import id>:<row>``) applied by
the same code as the inbox's (:func:`services.worker.apply.apply_messages`): attributes are
``set`` changes typed by the attribute's type, tag columns are tag operations, segment columns
are manual segment operations. Before applying, the rows are played against the users' stored
state with the same rules (:func:`classify`), which says per row whether it created the user,
updated something or changed nothing.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.worker.tags import apply_tag_ops
from shared.csv_cells import unescape_cell
from shared.db import Conn
from shared.import_mapping import MAX_TAG_PART, ColumnMapping
from shared.membership.loader import stored_tags
from shared.messages import Change, InboxMessage, MessageError, TagOp, normalise_id
from shared.profiles import apply_changes, apply_segment_ops

_INTEGER = re.compile(r"-?(0|[1-9]\d{0,17})")
_DECIMAL = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_TRUE = frozenset(("true", "yes", "1"))
_FALSE = frozenset(("false", "no", "0"))


def typed_value(cell: str, type_: str | None) -> Any:
    """A cell as the value of an attribute of type ``type_`` (None: not typed yet, so numbers
    and true/false read as such, and the first value seen decides the type as for identify).
    A cell that does not read as the type is kept as text: the worker warns, as for
    identify."""
    if type_ in ("number", None):
        digits = cell[1:] if cell.startswith("-") else cell
        # a plain integer (what _INTEGER matches) without the two regular expressions
        if 0 < len(digits) <= 18 and digits.isascii() and digits.isdigit():
            if digits[0] != "0" or len(digits) == 1:
                return int(cell)
    if type_ in ("number", None) and _DECIMAL.fullmatch(cell):
        if _INTEGER.fullmatch(cell):
            return int(cell)
        number = float(cell)
        if math.isfinite(number):
            return number
    if type_ == "boolean":
        low = cell.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    if type_ is None and cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    if type_ == "list":
        if cell.startswith("["):
            try:
                items = msgspec.json.decode(cell)
            except msgspec.DecodeError:
                items = None
            if isinstance(items, list) and all(isinstance(i, str) for i in items):
                return items
        return [part.strip() for part in cell.split(",") if part.strip()]
    return cell


@dataclass(slots=True)
class RowPlan:
    """One data row: what its message will do, or why it is rejected."""

    number: int
    cells: list[str]
    error: str | None = None
    user_id: str | None = None
    #: the row names its user by email only: resolved by :func:`resolve_emails`
    email: str | None = None
    #: users the row applies to, as (userId, anonymousId) (an email may match several)
    targets: list[tuple[str | None, str | None]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: list[TagOp] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    changes: dict[str, Change] | None = None


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def plan_rows(
    kind: str,
    columns: list[str],
    mapping: Mapping[str, ColumnMapping],
    records: Sequence[tuple[int, list[str]]],
    types: Mapping[str, str],
    manual_keys: Mapping[str, int],
    default_segment: str | None,
) -> list[RowPlan]:
    """The plan of each record, given as (row number, cells); no I/O."""
    roles = [
        (i, mapping[c].as_, mapping[c].name)
        for i, c in enumerate(columns)
        if mapping[c].as_ != "ignore"
    ]
    plans = []
    for number, raw in records:
        plan = RowPlan(number, raw)
        plans.append(plan)
        if len(raw) > len(columns) and any(raw[len(columns) :]):
            plan.error = f"the row has {len(raw)} cells; the header names {len(columns)} columns"
            continue
        try:
            _fill(plan, kind, roles, types, manual_keys, default_segment)
        except MessageError as exc:
            plan.error = str(exc)
    return plans


Numbered = tuple[int, list[str]]


def split_lanes(
    columns: list[str], mapping: Mapping[str, ColumnMapping], records: list[Numbered], lanes: int
) -> list[list[Numbered]]:
    """``records`` in ``lanes`` lanes that may be applied at the same time, each in file
    order: a user's rows are all in the lane its userId hashes to (CRC-32, the same in every
    process), so no two lanes touch one user. One lane (the first) when a row has no usable
    userId: an email alone names users found only in PostgreSQL, who may be another row's
    userId. The split depends on the rows alone, so a resumed import splits them the same."""
    at = next((i for i, c in enumerate(columns) if mapping[c].as_ == "userId"), None)
    if at is None or lanes == 1:
        return [records]
    out: list[list[Numbered]] = [[] for _ in range(lanes)]
    for number, raw in records:
        try:
            user_id = normalise_id("userId", unescape_cell(raw[at]) if at < len(raw) else "")
        except MessageError:
            return [records]
        assert user_id is not None
        out[zlib.crc32(user_id.encode()) % lanes].append((number, raw))
    return out


def _fill(
    plan: RowPlan,
    kind: str,
    roles: list[tuple[int, str, str | None]],
    types: Mapping[str, str],
    manual_keys: Mapping[str, int],
    default_segment: str | None,
) -> None:
    email = None
    cells = plan.cells
    width = len(cells)
    for i, as_, name in roles:
        if i >= width:
            continue
        cell = cells[i]
        if cell.startswith("'"):
            cell = unescape_cell(cell)
        if not cell:
            continue  # an empty cell adds nothing (it does not unset)
        if as_ == "attribute":
            assert name is not None
            plan.attributes[name] = typed_value(cell, types.get(name))
        elif as_ == "userId":
            plan.user_id = normalise_id("userId", cell)
        elif as_ == "email":
            if "@" not in cell or len(cell) > 320:
                raise MessageError("email", f"{cell!r} is not an email address")
            email = cell
        elif as_ == "segment":
            if "," in cell:
                plan.segments.extend(_keys(cell))
            elif key := cell.strip():
                plan.segments.append(key)
        elif as_ == "tag":
            assert name is not None
            if len(cell) > MAX_TAG_PART:
                raise MessageError(name, f"a tag value is 1-{MAX_TAG_PART} characters")
            plan.tags.append(TagOp("add", name, cell))
    if kind == "members" and not plan.segments:
        if default_segment is None:
            raise MessageError("segment", "the row names no segment")
        plan.segments.append(default_segment)
    for key in plan.segments:
        if key not in manual_keys:
            raise MessageError("segment", f"no manual segment with key {key!r}")
    if plan.user_id is not None:
        plan.targets.append((plan.user_id, None))
        if email is not None and kind == "users":
            plan.attributes["email"] = email
    elif email is not None:
        plan.email = email
    else:
        raise MessageError("userId", "the row has neither a userId nor an email")


_BY_EMAIL = """
SELECT u.email_lower AS email, u.user_id,
       (SELECT min(i.anonymous_id) FROM identities i
        WHERE i.env_id = u.env_id AND i.user_pk = u.id) AS anonymous_id
FROM users u
WHERE u.env_id = $1 AND u.email_lower = ANY($2::text[])
"""


async def resolve_emails(conn: Conn, env_id: int, kind: str, plans: list[RowPlan]) -> None:
    """Resolve rows named by email alone (case-insensitively): a members row applies to every
    user with that email; a users row needs exactly one. Unmatched rows are rejected."""
    wanted = sorted({p.email.lower() for p in plans if p.email and p.error is None})
    if not wanted:
        return
    found: dict[str, list[tuple[str | None, str | None]]] = {}
    for row in await conn.fetch(_BY_EMAIL, env_id, wanted):
        if row["user_id"] is not None or row["anonymous_id"] is not None:
            found.setdefault(row["email"], []).append((row["user_id"], row["anonymous_id"]))
    for plan in plans:
        if plan.email is None or plan.error is not None:
            continue
        matches = found.get(plan.email.lower(), [])
        if not matches:
            plan.error = f"email: no user has the email {plan.email!r}" + (
                " (map a userId column to create users)" if kind == "users" else ""
            )
        elif kind == "users" and len(matches) > 1:
            plan.error = (
                f"email: {len(matches)} users have the email {plan.email!r}; "
                "map a userId column to say which"
            )
        else:
            plan.targets = sorted(matches, key=lambda t: (t[0] or "", t[1] or ""))


@dataclass
class _Stored:
    exists: bool
    attributes: dict[str, Any]
    attr_ts: dict[str, int]
    tags: frozenset[tuple[str, str]]
    manual: set[str]


Target = tuple[str | None, str | None]


async def stored_state(
    conn: Conn, env_id: int, plans: list[RowPlan], manual_keys: Mapping[str, int]
) -> dict[Target, _Stored]:
    """The stored state of every user the rows name, locked in id order (as every writer of
    profiles locks). Each statement is skipped when it has nothing to look for (a new
    user's rows), and every one reads by index: a generic plan of an empty ``= ANY`` join
    had scanned the environment's memberships."""
    targets = {t for p in plans if p.error is None for t in p.targets}
    user_ids = sorted({u for u, _ in targets if u is not None})
    anonymous = sorted({a for u, a in targets if u is None and a is not None})
    # the pks first (each side by its own index), then the rows locked in id order
    found: list[Any] = []
    if user_ids:
        found += await conn.fetch(
            """SELECT id, NULL::text AS anonymous_id FROM users
               WHERE env_id = $1 AND user_id = ANY($2::text[])""",
            env_id,
            user_ids,
        )
    if anonymous:
        found += await conn.fetch(
            """SELECT u.id, i.anonymous_id FROM identities i
               JOIN users u ON u.env_id = i.env_id AND u.id = i.user_pk AND u.user_id IS NULL
               WHERE i.env_id = $1 AND i.anonymous_id = ANY($2::text[])""",
            env_id,
            anonymous,
        )
    if not found:
        return {}
    by_anonymous = {r["id"]: r["anonymous_id"] for r in found if r["anonymous_id"] is not None}
    rows = await conn.fetch(
        """SELECT id, user_id, attributes, attr_ts FROM users
           WHERE env_id = $1 AND id = ANY($2::bigint[]) ORDER BY id FOR UPDATE""",
        env_id,
        sorted({r["id"] for r in found}),
    )
    pks = sorted({r["id"] for r in rows})
    tags = await stored_tags(conn, env_id, pks)
    key_of = {i: k for k, i in manual_keys.items()}
    manual: dict[int, set[str]] = {}
    for row in await conn.fetch(
        "SELECT user_pk, segment_id FROM memberships WHERE env_id = $1 AND user_pk = ANY($2)",
        env_id,
        pks,
    ):
        key = key_of.get(row["segment_id"])
        if key is not None:
            manual.setdefault(row["user_pk"], set()).add(key)
    out: dict[Target, _Stored] = {}
    for row in rows:
        target = (
            (row["user_id"], None)
            if row["user_id"] is not None
            else (None, by_anonymous.get(row["id"]))
        )
        out[target] = _Stored(
            True,
            dict(row["attributes"]),
            dict(row["attr_ts"]),
            frozenset(tags.get(row["id"], ())),
            manual.get(row["id"], set()),
        )
    return out


def _changes(plan: RowPlan) -> dict[str, Change]:
    """The row's attribute cells as ``set`` changes (built once per row)."""
    if plan.changes is None:
        plan.changes = {name: Change("set", value) for name, value in plan.attributes.items()}
    return plan.changes


def classify(
    plans: list[RowPlan], stored: dict[Target, _Stored], manual_keys: Mapping[str, int], at: int
) -> list[str]:
    """Per applicable row, in order: ``created``, ``updated`` or ``unchanged``, by playing
    the rows against the stored state with the merge rules (``at``: the messages' time)."""
    outcomes = []
    for plan in plans:
        if plan.error is not None:
            continue
        outcome = "unchanged"
        changes = _changes(plan)
        for target in plan.targets:
            state = stored.setdefault(target, _Stored(False, {}, {}, frozenset(), set()))
            attributes, attr_ts = state.attributes, state.attr_ts
            if changes:  # (the copies and set operations only where the row has something)
                attributes, attr_ts = dict(attributes), dict(attr_ts)
                apply_changes(attributes, attr_ts, changes, at)
            tags = apply_tag_ops(state.tags, plan.tags) if plan.tags else state.tags
            manual = state.manual
            if plan.segments:
                manual = apply_segment_ops(manual, plan.segments, manual_keys)
            if not state.exists:
                outcome = "created"
            elif outcome == "unchanged" and (
                attributes != state.attributes or tags != state.tags or manual != state.manual
            ):
                outcome = "updated"
            stored[target] = _Stored(True, attributes, attr_ts, tags, manual)
        outcomes.append(outcome)
    return outcomes


def to_messages(import_id: int, plans: list[RowPlan], at: int) -> list[InboxMessage]:
    """The identify messages of the applicable rows (one per user a row names)."""
    out = []
    for plan in plans:
        if plan.error is not None:
            continue
        changes = _changes(plan)
        for n, (user_id, anonymous_id) in enumerate(plan.targets):
            suffix = f":{n}" if n else ""
            out.append(
                InboxMessage(
                    type="identify",
                    messageId=f"import:{import_id}:{plan.number}{suffix}",
                    timestamp=at,
                    receivedAt=at,
                    userId=user_id,
                    anonymousId=anonymous_id,
                    attributes=changes,
                    segments=list(plan.segments),
                    tags=list(plan.tags),
                    seen=False,
                )
            )
    return out
