"""Apply one environment's share of a claimed inbox batch, inside the caller's transaction.

Profiles are locked (``FOR UPDATE``, in id order), the messages are applied in Python in
timestamp order (identity resolution, anonymous-to-identified merges, attribute changes,
manual segment operations), then everything is written back with set-based SQL, and the
touched users' memberships are re-evaluated and their difference written.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from services.worker.companies import CompanyOp, apply_company_ops
from shared.db import Conn
from shared.membership import EnvSegments, stored_memberships, subject_of, write_memberships
from shared.messages import InboxMessage
from shared.profiles import apply_changes, apply_segment_ops, merge_attributes

_json = msgspec.json.Encoder()


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass
class Profile:
    """A profile while a batch is applied. New anonymous profiles get negative temporary pks."""

    pk: int
    user_id: str | None
    attributes: dict[str, Any]
    attr_ts: dict[str, int]
    first_seen: int
    last_seen: int
    version: int
    new: bool = False
    #: manual segment keys after this batch's operations (None: untouched, read from storage)
    manual_ops: list[str] = field(default_factory=list)
    #: anonymous ids that resolve to this profile and were seen in this batch (Redis keys)
    anon_ids: set[str] = field(default_factory=set)
    merged_from: list[int] = field(default_factory=list)

    def seen(self, at: int) -> None:
        self.first_seen = min(self.first_seen, at)
        self.last_seen = max(self.last_seen, at)


@dataclass
class BatchResult:
    """What the caller does after commit: Redis sets to write ({key id: (version, segments)})."""

    redis_sets: dict[str, tuple[int, set[int]]]
    applied: int
    membership_changes: int


@dataclass
class _State:
    env_id: int
    profiles: dict[int, Profile]
    by_user_id: dict[str, int]
    anon_to_pk: dict[str, int]
    new_links: dict[str, int] = field(default_factory=dict)
    events: list[tuple[int, str, Any, int, str]] = field(default_factory=list)
    company_ops: list[CompanyOp] = field(default_factory=list)
    warnings: list[tuple[str, str | None, str | None, str]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    temp_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(-1, -1))


_PROFILE_COLUMNS = (
    "id, user_id, attributes, attr_ts, first_seen_at, last_seen_at, membership_version"
)


def _profile(row: Any) -> Profile:
    return Profile(
        pk=row["id"],
        user_id=row["user_id"],
        attributes=dict(row["attributes"]),
        attr_ts=dict(row["attr_ts"]),
        first_seen=int(row["first_seen_at"].timestamp() * 1000),
        last_seen=int(row["last_seen_at"].timestamp() * 1000),
        version=row["membership_version"],
    )


async def _load(conn: Conn, env_id: int, msgs: Sequence[InboxMessage]) -> _State:
    """Create the identified users the batch names, then lock and load every profile the
    batch's ids resolve to."""
    first: dict[str, int] = {}
    anon: set[str] = set()
    for m in msgs:
        if m.userId is not None:
            first[m.userId] = min(first.get(m.userId, m.timestamp), m.timestamp)
        if m.anonymousId is not None:
            anon.add(m.anonymousId)
        if m.previousId is not None:
            anon.add(m.previousId)
    user_ids = sorted(first)
    if user_ids:
        await conn.execute(
            """INSERT INTO users (env_id, user_id, first_seen_at, last_seen_at)
               SELECT $1, u, to_timestamp(t / 1000.0), to_timestamp(t / 1000.0)
               FROM unnest($2::text[], $3::bigint[]) AS x(u, t) ORDER BY u
               ON CONFLICT (env_id, user_id) WHERE user_id IS NOT NULL DO NOTHING""",
            env_id,
            user_ids,
            [first[u] for u in user_ids],
        )
    # An anonymous profile may be merged away by another worker between our reads: re-read.
    for _ in range(5):
        links = {
            r["anonymous_id"]: r["user_pk"]
            for r in await conn.fetch(
                """SELECT anonymous_id, user_pk FROM identities
                   WHERE env_id = $1 AND anonymous_id = ANY($2)""",
                env_id,
                list(anon),
            )
        }
        rows = await conn.fetch(
            f"""SELECT {_PROFILE_COLUMNS} FROM users
                WHERE env_id = $1 AND (user_id = ANY($2) OR id = ANY($3))
                ORDER BY id FOR UPDATE""",
            env_id,
            user_ids,
            list(set(links.values())),
        )
        profiles = {r["id"]: _profile(r) for r in rows}
        if all(pk in profiles for pk in links.values()):
            break
    by_user_id = {p.user_id: p.pk for p in profiles.values() if p.user_id is not None}
    return _State(env_id, profiles, by_user_id, links)


def _link(state: _State, anonymous_id: str, target: Profile, msg: InboxMessage) -> None:
    """Make ``anonymous_id`` resolve to ``target``, merging its anonymous profile if it has one."""
    target.anon_ids.add(anonymous_id)
    current = state.anon_to_pk.get(anonymous_id)
    if current == target.pk:
        return
    if current is None:
        state.anon_to_pk[anonymous_id] = target.pk
        state.new_links[anonymous_id] = target.pk
        return
    source = state.profiles[current]
    if source.user_id is not None:
        state.warnings.append(
            (
                msg.messageId,
                target.user_id,
                None,
                f"anonymousId {anonymous_id!r} already belongs to user {source.user_id!r}; "
                "two identified users are never merged, the message applied to its own userId",
            )
        )
        return
    # Anonymous -> identified: attributes (identified wins), events, companies, manual segments.
    merge_attributes(target.attributes, target.attr_ts, source.attributes, source.attr_ts)
    target.first_seen = min(target.first_seen, source.first_seen)
    target.last_seen = max(target.last_seen, source.last_seen)
    target.version = max(target.version, source.version)
    target.manual_ops = [*source.manual_ops, *target.manual_ops]
    target.merged_from.extend([source.pk, *source.merged_from])
    for anon_id, pk in list(state.anon_to_pk.items()):
        if pk == source.pk:
            state.anon_to_pk[anon_id] = target.pk
            state.new_links[anon_id] = target.pk
            target.anon_ids.add(anon_id)
    target.anon_ids |= source.anon_ids
    for i, event in enumerate(state.events):
        if event[0] == source.pk:
            state.events[i] = (target.pk, *event[1:])
    del state.profiles[source.pk]
    if source.pk > 0:
        state.deleted.append(source.pk)


def _resolve(state: _State, msg: InboxMessage) -> Profile:
    if msg.userId is not None:
        target = state.profiles[state.by_user_id[msg.userId]]
        for anonymous_id in (msg.anonymousId, msg.previousId):
            if anonymous_id is not None:
                _link(state, anonymous_id, target, msg)
        return target
    assert msg.anonymousId is not None
    pk = state.anon_to_pk.get(msg.anonymousId)
    if pk is None:
        pk = next(state.temp_ids)
        state.profiles[pk] = Profile(
            pk=pk,
            user_id=None,
            attributes={},
            attr_ts={},
            first_seen=msg.timestamp,
            last_seen=msg.timestamp,
            version=0,
            new=True,
        )
        state.anon_to_pk[msg.anonymousId] = pk
        state.new_links[msg.anonymousId] = pk
    profile = state.profiles[pk]
    profile.anon_ids.add(msg.anonymousId)
    return profile


def _apply(state: _State, msg: InboxMessage) -> Profile:
    if msg.type == "alias" and msg.previousId is not None:
        previous_pk = state.by_user_id.get(msg.previousId)
        if previous_pk is not None and msg.previousId != msg.userId:
            state.warnings.append(
                (
                    msg.messageId,
                    msg.userId,
                    None,
                    f"previousId {msg.previousId!r} is an identified user; "
                    "two identified users are never merged",
                )
            )
            msg = msgspec.structs.replace(msg, previousId=None)
    profile = _resolve(state, msg)
    profile.seen(msg.timestamp)
    if msg.type == "identify":
        for name, warning in apply_changes(
            profile.attributes, profile.attr_ts, msg.attributes, msg.timestamp
        ):
            state.warnings.append((msg.messageId, profile.user_id, name, warning))
        profile.manual_ops.extend(msg.segments)
    elif msg.type == "group":
        assert msg.groupId is not None
        state.company_ops.append(
            CompanyOp(
                profile.pk,
                msg.groupId,
                msg.attributes,
                msg.membership,
                msg.timestamp,
                msg.messageId,
            )
        )
        profile.manual_ops.extend(msg.segments)
    elif msg.event is not None:
        state.events.append((profile.pk, msg.event, msg.properties, msg.timestamp, msg.messageId))
    return profile


async def _write_profiles(conn: Conn, state: _State) -> dict[int, int]:
    """Insert new anonymous profiles and update the rest; returns {temp pk: real pk}."""
    env_id = state.env_id
    new = [p for p in state.profiles.values() if p.new]
    real: dict[int, int] = {}
    if new:
        ids = await conn.fetch(
            "SELECT nextval(pg_get_serial_sequence('users', 'id')) AS id "
            "FROM generate_series(1, $1)",
            len(new),
        )
        for profile, row in zip(new, ids, strict=True):
            real[profile.pk] = row["id"]
            profile.pk = row["id"]
        await conn.execute(
            """INSERT INTO users (env_id, id, attributes, attr_ts, first_seen_at, last_seen_at,
                                  membership_version)
               OVERRIDING SYSTEM VALUE
               SELECT $1, i, a::jsonb, t::jsonb, to_timestamp(f / 1000.0),
                      to_timestamp(l / 1000.0), 1
               FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
                 AS x(i, a, t, f, l)""",
            env_id,
            [p.pk for p in new],
            [_json.encode(p.attributes).decode() for p in new],
            [_json.encode(p.attr_ts).decode() for p in new],
            [p.first_seen for p in new],
            [p.last_seen for p in new],
        )
        for p in new:
            p.version = 1
    old = [p for p in state.profiles.values() if not p.new]
    if old:
        rows = await conn.fetch(
            """UPDATE users u SET attributes = x.a::jsonb, attr_ts = x.t::jsonb,
                      first_seen_at = to_timestamp(x.f / 1000.0),
                      last_seen_at = to_timestamp(x.l / 1000.0),
                      membership_version = greatest(u.membership_version, x.v) + 1,
                      updated_at = now()
               FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                           $7::bigint[]) AS x(i, a, t, f, l, v)
               WHERE u.env_id = $1 AND u.id = x.i
               RETURNING u.id, u.membership_version""",
            env_id,
            [p.pk for p in old],
            [_json.encode(p.attributes).decode() for p in old],
            [_json.encode(p.attr_ts).decode() for p in old],
            [p.first_seen for p in old],
            [p.last_seen for p in old],
            [p.version for p in old],
        )
        versions = {r["id"]: r["membership_version"] for r in rows}
        for p in old:
            p.version = versions[p.pk]
    return real


async def _write_rest(conn: Conn, state: _State, real: dict[int, int]) -> None:
    env_id = state.env_id
    if state.new_links:
        anon = list(state.new_links)
        await conn.execute(
            """INSERT INTO identities (env_id, anonymous_id, user_pk)
               SELECT $1, a, u FROM unnest($2::text[], $3::bigint[]) AS x(a, u)
               ON CONFLICT (env_id, anonymous_id) DO UPDATE SET user_pk = EXCLUDED.user_pk""",
            env_id,
            anon,
            [real.get(state.new_links[a], state.new_links[a]) for a in anon],
        )
    for target in state.profiles.values():
        sources = [pk for pk in target.merged_from if pk > 0]
        if not sources:
            continue
        await conn.execute(
            "UPDATE events SET user_pk = $2 WHERE env_id = $1 AND user_pk = ANY($3)",
            env_id,
            target.pk,
            sources,
        )
        await conn.execute(
            """INSERT INTO company_members (env_id, user_pk, company_pk, attributes, attr_ts)
               SELECT env_id, $2, company_pk, attributes, attr_ts FROM company_members
               WHERE env_id = $1 AND user_pk = ANY($3)
               ON CONFLICT DO NOTHING""",
            env_id,
            target.pk,
            sources,
        )
    if state.deleted:
        await conn.execute(
            "DELETE FROM users WHERE env_id = $1 AND id = ANY($2)", env_id, state.deleted
        )
    if state.events:
        await conn.execute(
            """INSERT INTO events (env_id, user_pk, name, properties, ts, message_id)
               SELECT $1, u, n, p::jsonb, to_timestamp(t / 1000.0), m
               FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[])
                 AS x(u, n, p, t, m)""",
            env_id,
            [real.get(e[0], e[0]) for e in state.events],
            [e[1] for e in state.events],
            [_json.encode(e[2]).decode() for e in state.events],
            [e[3] for e in state.events],
            [e[4] for e in state.events],
        )
    if state.company_ops:
        for name, warning, message_id in await apply_company_ops(conn, env_id, state.company_ops):
            state.warnings.append((message_id, None, name, warning))
    if state.warnings:
        await conn.execute(
            """INSERT INTO ingest_warnings (env_id, message_id, user_id, attribute, warning)
               SELECT $1, m, u, a, w FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                 AS x(m, u, a, w)""",
            env_id,
            *(list(col) for col in zip(*state.warnings, strict=True)),
        )


async def apply_messages(
    conn: Conn,
    env_id: int,
    messages: Sequence[InboxMessage],
    segments: EnvSegments,
    now: datetime,
) -> BatchResult:
    """Apply ``messages`` (already deduplicated) of one environment and re-evaluate the
    memberships of every profile they touched. Runs inside the caller's transaction."""
    ordered = sorted(messages, key=lambda m: m.timestamp)
    state = await _load(conn, env_id, ordered)
    for msg in ordered:
        _apply(state, msg)
    linked = set(state.new_links)
    real = await _write_profiles(conn, state)
    await _write_rest(conn, state, real)

    profiles = list(state.profiles.values())
    pks = [p.pk for p in profiles]
    old = await stored_memberships(conn, env_id, pks)
    manual_by_id = {v: k for k, v in segments.manual.items()}
    new: dict[int, set[int]] = {}
    for p in profiles:
        merged_manual = set()
        for pk in (p.pk, *p.merged_from):
            merged_manual |= old.get(pk, set()) & segments.manual_ids
        keys = apply_segment_ops(
            {manual_by_id[i] for i in merged_manual}, p.manual_ops, segments.manual
        )
        subject = subject_of(
            p.pk, p.user_id, p.attributes, ms_to_dt(p.first_seen), ms_to_dt(p.last_seen)
        )
        new[p.pk] = segments.evaluate(subject, (segments.manual[k] for k in keys), now)
    changes = await write_memberships(conn, env_id, old, new, "message")

    # Redis needs a write only where the answer changed: a user whose memberships are the
    # same keeps a correct set (or none, refilled on demand). Merges and new anonymous links
    # change what an anonymous id's key must answer.
    redis_sets: dict[str, tuple[int, set[int]]] = {}
    for p in profiles:
        if new[p.pk] == old.get(p.pk) and not p.merged_from and not (p.anon_ids & linked):
            continue
        for key in ({p.user_id} if p.user_id is not None else set()) | p.anon_ids:
            redis_sets[key] = (p.version, new[p.pk])
    return BatchResult(redis_sets, len(messages), changes)
