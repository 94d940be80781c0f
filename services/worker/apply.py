"""Apply one environment's share of a claimed inbox batch, inside the caller's transaction.

Profiles are locked (``FOR UPDATE``, in id order), the messages are applied in Python in
timestamp order (identity resolution, anonymous-to-identified merges, attribute changes,
tags, manual segment operations), then everything is written back with set-based SQL, and the
touched users' memberships are re-evaluated and their difference written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec

from services.worker.companies import CompanyOp
from services.worker.identity import (
    PROFILE_COLUMNS,
    BatchState,
    Profile,
    load_state,
    ms_to_dt,
    profile_from_row,
    resolve,
)
from services.worker.tags import apply_tags
from services.worker.typing_check import check_types
from services.worker.writes import write_profiles, write_rest
from shared.conditions import Subject
from shared.db import Conn
from shared.membership import (
    Bumped,
    EnvSegments,
    bump_versions,
    inserted_version,
    outbox,
    write_memberships,
)
from shared.membership.loader import Inputs, load_inputs, subject
from shared.membership.store import stored_memberships
from shared.messages import InboxMessage
from shared.profiles import apply_changes, apply_segment_ops
from shared.redis_keys import anonymous as anonymous_key


@dataclass
class BatchResult:
    """What the caller does after commit: Redis sets to write ({key id: (version, segments)}),
    then clear the cache outbox row that stands for them."""

    redis_sets: dict[str, tuple[int, set[int]]]
    applied: int
    membership_changes: int
    outbox_id: int | None = None


def _apply(state: BatchState, msg: InboxMessage) -> Profile:
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
    profile = resolve(state, msg)
    if msg.seen:
        profile.seen(msg.timestamp)
    if msg.type == "identify":
        for name, warning in apply_changes(
            profile.attributes, profile.attr_ts, msg.attributes, msg.timestamp
        ):
            state.warnings.append((msg.messageId, profile.user_id, name, warning))
        profile.manual_ops.extend(msg.segments)
        profile.tag_ops.extend(msg.tags)
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
        profile.tag_ops.extend(msg.tags)
    elif msg.event is not None:
        state.events.append((profile.pk, msg.event, msg.properties, msg.timestamp, msg.messageId))
    return profile


async def apply_messages(
    conn: Conn,
    env_id: int,
    messages: Sequence[InboxMessage],
    segments: EnvSegments,
    now: datetime,
    cause: str = "message",
) -> BatchResult:
    """Apply ``messages`` (already deduplicated) of one environment and re-evaluate the
    memberships of every profile they touched; the changes are logged with ``cause``
    (``import`` for an import's rows). Runs inside the caller's transaction."""
    ordered = sorted(messages, key=lambda m: m.timestamp)
    state = await load_state(conn, env_id, ordered)
    for msg in ordered:
        _apply(state, msg)
    state.warnings.extend(await check_types(conn, env_id, ordered, segments.types))
    linked = set(state.new_links)
    # the stored memberships of stored profiles merged away in this batch, read before
    # write_profiles deletes them: their manual segments move to the identified user
    merged_pks = [pk for p in state.profiles.values() for pk in p.merged_from if pk > 0]
    merged_old = await stored_memberships(conn, env_id, merged_pks) if merged_pks else {}
    # With All users, every new profile is bumped below (its memberships go from none to at
    # least All users): write_profiles inserts it at that version, bump_versions skips it
    born_bumped = segments.all_users is not None
    real = await write_profiles(conn, state, bumped=born_bumped)
    profiles = list(state.profiles.values())
    tags = await apply_tags(conn, env_id, profiles, everyone=segments.uses_tags)
    await write_rest(conn, state, real)

    pks = [p.pk for p in profiles]
    loaded = await load_inputs(
        conn,
        env_id,
        pks,
        tags=False,  # the batch's own result (apply_tags), below
        companies=segments.uses_companies,
        events=segments.events,
        segments=False,  # below: a profile this batch created has none stored yet
    )
    stored = await stored_memberships(conn, env_id, [p.pk for p in profiles if not p.new])
    inputs = msgspec.structs.replace(loaded, tags=tags, segments=stored)
    old = {pk: set(stored.get(pk, ())) for pk in pks}
    manual_by_id = {v: k for k, v in segments.manual.items()}
    new: dict[int, set[int]] = {}
    for p in profiles:
        merged_manual = set()
        for pk in (p.pk, *p.merged_from):
            merged_manual |= old.get(pk, merged_old.get(pk, set())) & segments.manual_ids
        keys = apply_segment_ops(
            {manual_by_id[i] for i in merged_manual}, p.manual_ops, segments.manual
        )
        new[p.pk] = segments.evaluate(_subject(p, inputs), (segments.manual[k] for k in keys), now)
    if segments.uses_companies and state.changed_companies:
        neighbours = await _company_neighbours(
            conn, env_id, state.changed_companies, set(pks), segments
        )
        await _evaluate_neighbours(conn, env_id, neighbours, segments, now, old, new)
        profiles += [n for n in neighbours if new[n.pk] != old.get(n.pk)]
    changes = await write_memberships(conn, env_id, old, new, cause)

    # Redis needs a write only where the answer changed: a user whose memberships are the
    # same keeps a correct set (or none, refilled on demand). Merges and new anonymous links
    # change what an anonymous id's key must answer. Every key of a profile is written: its
    # userId and all its anonymous ids, not only those seen in this batch. Exactly these
    # users' versions move (the store's rule; a merged profile's version carries over).
    rewrite = [
        p for p in profiles if new[p.pk] != old.get(p.pk) or p.merged_from or (p.anon_ids & linked)
    ]
    born = {
        p.pk: Bumped(p.pk, p.user_id, inserted_version(p.version))
        for p in rewrite
        if p.new and born_bumped
    }
    assert not born_bumped or all(p.pk in born for p in profiles if p.new)
    bumped = born | await bump_versions(
        conn,
        env_id,
        [p.pk for p in rewrite if p.pk not in born],
        [p.version for p in rewrite if p.pk not in born],
    )
    anonymous = await _anonymous_ids(conn, env_id, [p.pk for p in rewrite])
    redis_sets: dict[str, tuple[int, set[int]]] = {}
    for p in rewrite:
        p.version = bumped[p.pk].version
        # anonymous ids in their own namespace (no anonymous id answers for a userId)
        keys = {anonymous_key(a) for a in p.anon_ids | anonymous.get(p.pk, set())}
        if p.user_id is not None:
            keys.add(p.user_id)
        for key in keys:
            redis_sets[key] = (p.version, new[p.pk])
    outbox_id = await outbox.record(conn, env_id, sorted(bumped))
    return BatchResult(redis_sets, len(messages), changes, outbox_id)


def _subject(p: Profile, inputs: Inputs) -> Subject:
    """What the conditions read of a profile (its attributes as this batch left them)."""
    return subject(
        p.pk, p.user_id, p.attributes, ms_to_dt(p.first_seen), ms_to_dt(p.last_seen), inputs
    )


#: Members of changed companies evaluated again inside the batch; beyond this many, the
#: segments with company conditions are recomputed in bulk instead (by the worker's sweep).
NEIGHBOURS_INLINE = 5000


async def _company_neighbours(
    conn: Conn, env_id: int, companies: set[int], batch_pks: set[int], segments: EnvSegments
) -> list[Profile]:
    """The other members of ``companies`` (whose attributes this batch changed), locked in id
    order. Too many of them: the segments reading company attributes are marked 'computing'
    for a bulk recompute, and none are returned."""
    count = await conn.fetchval(
        """SELECT count(DISTINCT user_pk) FROM company_members
           WHERE env_id = $1 AND company_pk = ANY($2)""",
        env_id,
        sorted(companies),
    )
    if count > NEIGHBOURS_INLINE + len(batch_pks):
        await conn.execute(
            "UPDATE segments SET status = 'computing' WHERE env_id = $1 AND id = ANY($2)",
            env_id,
            [s.id for s in segments.dynamic if s.reads_companies],
        )
        return []
    rows = await conn.fetch(
        f"""SELECT {PROFILE_COLUMNS} FROM users
            WHERE env_id = $1 AND NOT (id = ANY($3::bigint[])) AND id IN (
                SELECT user_pk FROM company_members WHERE env_id = $1 AND company_pk = ANY($2))
            ORDER BY id FOR UPDATE""",
        env_id,
        sorted(companies),
        sorted(batch_pks),
    )
    return [profile_from_row(row) for row in rows]


async def _evaluate_neighbours(
    conn: Conn,
    env_id: int,
    neighbours: list[Profile],
    segments: EnvSegments,
    now: datetime,
    old: dict[int, set[int]],
    new: dict[int, set[int]],
) -> None:
    """Evaluate profiles the batch did not change (their company did) into ``old`` / ``new``."""
    if not neighbours:
        return
    inputs = await load_inputs(
        conn,
        env_id,
        [n.pk for n in neighbours],
        tags=segments.uses_tags,
        companies=True,
        events=segments.events,
        segments=True,
    )
    for n in neighbours:
        old[n.pk] = set(inputs.segments[n.pk])
        new[n.pk] = segments.evaluate(_subject(n, inputs), old[n.pk] & segments.manual_ids, now)


async def _anonymous_ids(conn: Conn, env_id: int, pks: list[int]) -> dict[int, set[str]]:
    """{user pk: every anonymous id resolving to it} (their Redis keys answer for it too)."""
    out: dict[int, set[str]] = defaultdict(set)
    real = [pk for pk in pks if pk > 0]
    if real:
        rows = await conn.fetch(
            "SELECT user_pk, anonymous_id FROM identities WHERE env_id = $1 AND user_pk = ANY($2)",
            env_id,
            real,
        )
        for row in rows:
            out[row["user_pk"]].add(row["anonymous_id"])
    return out
