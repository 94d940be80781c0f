"""An environment's segments as the worker evaluates them: compiled once per definition,
in dependency order, with what their conditions need loaded for each user."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from shared.attribute_types import type_key
from shared.conditions import (
    Condition,
    ConditionError,
    Subject,
    Tag,
    compile_python,
    parse_condition,
    referenced_attributes,
    referenced_events,
    referenced_segments,
    uses_time,
)
from shared.conditions.env_engine import SegmentsEvaluator, compile_segments
from shared.conditions.references import leaves
from shared.db import Conn
from shared.membership.graph import dependency_order, name_map

log = logging.getLogger(__name__)

Predicate = Callable[[Subject, datetime], bool]


class DynamicSegment(msgspec.Struct, frozen=True):
    id: int
    key: str
    version: int
    predicate: Predicate
    #: reads other segments' memberships (evaluated after them)
    needs_segments: bool = False
    #: its answer can change with time alone
    timed: bool = False
    #: reads company attributes
    reads_companies: bool = False


class EnvSegments(msgspec.Struct, frozen=True):
    """One environment's segments as the worker needs them."""

    all_users: int | None
    #: in dependency order: a segment comes after every segment its conditions refer to
    dynamic: tuple[DynamicSegment, ...]
    #: manual segment key -> id
    manual: Mapping[str, int]
    #: what the conditions read beyond attributes, so the worker loads only that
    uses_tags: bool = False
    events: frozenset[str] = frozenset()
    #: attribute types (the engines' ``types`` keys)
    types: Mapping[str, str] = msgspec.field(default_factory=dict)
    #: every dynamic segment compiled into one function (shared.conditions.env_engine);
    #: None: each segment's own predicate, in order
    evaluator: SegmentsEvaluator | None = None

    @property
    def uses_companies(self) -> bool:
        """Some condition reads company attributes (derived from the segments' own flags)."""
        return any(segment.reads_companies for segment in self.dynamic)

    @property
    def manual_ids(self) -> frozenset[int]:
        return frozenset(self.manual.values())

    def evaluate(self, subject: Subject, manual_ids: Iterable[int], now: datetime) -> set[int]:
        """The segment ids ``subject`` belongs to: All users, its manual segments, and every
        dynamic segment whose conditions hold at ``now`` (in dependency order, so a segment
        that refers to another sees its new answer)."""
        result = set(manual_ids)
        if self.all_users is not None:
            result.add(self.all_users)
        if self.evaluator is not None:
            self.evaluator(subject, now, result)
            return result
        for segment in self.dynamic:
            if segment.needs_segments:
                subject.segments = frozenset(result)
            if segment.predicate(subject, now):
                result.add(segment.id)
        return result


_SEGMENTS_DIGEST = """md5(coalesce((SELECT jsonb_agg(jsonb_build_array(id, key, kind, version)
    ORDER BY id) FROM segments WHERE env_id = $1), '[]')::text)"""
_TYPE_ROWS = """(SELECT jsonb_agg(jsonb_build_array(scope, name, type) ORDER BY scope, name)
    FROM attribute_types WHERE env_id = $1 AND scope IN ('user', 'company'))"""
#: What the worker reads per batch while nothing changes: two digests.
_DIGEST = f"""SELECT {_SEGMENTS_DIGEST} AS segments,
    md5(coalesce({_TYPE_ROWS}, '[]')::text) AS types"""
#: The definitions and the attribute types, with their digests (one snapshot).
_DEFINITIONS = f"""{_DIGEST},
    (SELECT jsonb_agg(jsonb_build_array(id, key, kind, version, conditions) ORDER BY id)
     FROM segments WHERE env_id = $1) AS rows,
    {_TYPE_ROWS} AS type_rows"""


class SegmentCatalog:
    """Compiled segments per environment, recompiled only when a definition, the attribute
    types or the segment names they resolve change."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[int, int, int], Predicate] = {}
        #: env id -> (fingerprint of its definitions, what was built from them)
        self._envs: dict[int, tuple[tuple[str, str], EnvSegments]] = {}

    async def load(self, conn: Conn, env_id: int) -> EnvSegments:
        """The environment's segments as they are now. One small query per call when nothing
        changed (a digest of every segment's id, key, kind and version, and of the attribute
        types); the definitions are read and compiled again only when the digest moves."""
        digest = await conn.fetchrow(_DIGEST, env_id)
        assert digest is not None
        fingerprint = (digest["segments"], digest["types"])
        cached = self._envs.get(env_id)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        # the definitions and their digests come from one statement (one snapshot), so what
        # is cached under a digest is what that digest describes
        loaded = await conn.fetchrow(_DEFINITIONS, env_id)
        assert loaded is not None
        rows = [
            {"id": i, "key": k, "kind": kind, "version": v, "conditions": c}
            for i, k, kind, v, c in loaded["rows"] or ()
        ]
        types = {type_key(scope, name): t for scope, name, t in loaded["type_rows"] or ()}
        segments = self._build(rows, types)
        self._envs[env_id] = ((loaded["segments"], loaded["types"]), segments)
        return segments

    def _build(self, rows: list[dict[str, Any]], types: dict[str, str]) -> EnvSegments:
        names = name_map(rows)
        context = hash((tuple(sorted(types.items())), tuple(sorted(names.items()))))
        all_users: int | None = None
        manual: dict[str, int] = {}
        compiled: dict[int, DynamicSegment] = {}
        conditions: dict[int, Condition] = {}
        refs: dict[int, set[int]] = {}
        uses_tags = False
        events: set[str] = set()
        for row in rows:
            if row["kind"] == "all":
                all_users = row["id"]
            elif row["kind"] == "manual":
                manual[row["key"]] = row["id"]
            elif row["conditions"] is not None:
                try:
                    cond = parse_condition(row["conditions"], types)
                    cache_key = (row["id"], row["version"], context)
                    predicate = self._compiled.get(cache_key)
                    if predicate is None:
                        predicate = compile_python(cond, types, names)
                        self._compiled[cache_key] = predicate
                except ConditionError as exc:  # saved before a type changed: it matches nobody
                    log.warning("segment %s does not compile: %s", row["id"], exc)
                    continue
                referenced = {names[r] for r in referenced_segments(cond) if r in names}
                attributes = referenced_attributes(cond)
                uses_tags = uses_tags or any(isinstance(leaf, Tag) for leaf in leaves(cond))
                reads_companies = any(s == "company" for s, _ in attributes)
                events |= referenced_events(cond)
                refs[row["id"]] = referenced
                conditions[row["id"]] = cond
                compiled[row["id"]] = DynamicSegment(
                    row["id"],
                    row["key"],
                    row["version"],
                    predicate,
                    needs_segments=bool(referenced),
                    timed=uses_time(cond),
                    reads_companies=reads_companies,
                )
        dynamic = tuple(compiled[i] for i in dependency_order(refs))
        return EnvSegments(
            all_users,
            dynamic,
            manual,
            uses_tags=uses_tags,
            events=frozenset(events),
            types=types,
            evaluator=compile_segments([(s.id, conditions[s.id]) for s in dynamic], types, names),
        )
