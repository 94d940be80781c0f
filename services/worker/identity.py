"""Identity resolution while a batch is applied: profiles locked and loaded, anonymous ids
linked, anonymous profiles merged into identified ones (in memory; written by
:mod:`services.worker.writes`)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.worker.companies import CompanyOp
from shared.db import Conn
from shared.messages import InboxMessage, TagOp
from shared.profiles import merge_attributes


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass
class Profile:
    """A profile while a batch is applied. ``new`` profiles are not stored yet: they are
    inserted once, with what the batch made of them, by
    :func:`services.worker.writes.write_profiles`; new identified users have their real pks
    from :func:`load_state`, new anonymous profiles negative temporary pks until then."""

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
    #: tag operations of this batch, in order (applied by services.worker.tags)
    tag_ops: list[TagOp] = field(default_factory=list)

    def seen(self, at: int) -> None:
        self.first_seen = min(self.first_seen, at)
        self.last_seen = max(self.last_seen, at)


@dataclass
class BatchState:
    env_id: int
    profiles: dict[int, Profile]
    by_user_id: dict[str, int]
    anon_to_pk: dict[str, int]
    new_links: dict[str, int] = field(default_factory=dict)
    events: list[tuple[int, str, Any, int, str]] = field(default_factory=list)
    company_ops: list[CompanyOp] = field(default_factory=list)
    #: companies whose attributes this batch changed
    changed_companies: set[int] = field(default_factory=set)
    warnings: list[tuple[str, str | None, str | None, str]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    temp_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(-1, -1))
    #: ids of the batch's anonymousIds / previousIds that are some user's userId: never
    #: linked as an anonymous id (separate namespaces: no takeover of that user's answers)
    user_id_taken: set[str] = field(default_factory=set)


PROFILE_COLUMNS = (
    "id, user_id, attributes, attr_ts, first_seen_at, last_seen_at, membership_version"
)


def profile_from_row(row: Any) -> Profile:
    return Profile(
        pk=row["id"],
        user_id=row["user_id"],
        attributes=dict(row["attributes"]),
        attr_ts=dict(row["attr_ts"]),
        first_seen=int(row["first_seen_at"].timestamp() * 1000),
        last_seen=int(row["last_seen_at"].timestamp() * 1000),
        version=row["membership_version"],
    )


async def user_pks(conn: Conn, count: int) -> list[int]:
    """``count`` pks for users not inserted yet, from the table's own sequence."""
    rows = await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence('users', 'id')) AS id FROM generate_series(1, $1)",
        count,
    )
    return [r["id"] for r in rows]


async def load_state(conn: Conn, env_id: int, msgs: Sequence[InboxMessage]) -> BatchState:
    """Lock and load every stored profile the batch's ids resolve to, and make a ``new``
    profile (with its real pk) for each userId not stored yet.

    A new identified user is written once, by :func:`services.worker.writes.write_profiles`
    with its final attributes, not inserted bare here and updated there (in a bench of new
    users that UPDATE cost three times the bare INSERT: the trigger again, a non-HOT tuple).
    Another transaction may create one of them meanwhile: that INSERT then finds it and
    raises :class:`shared.membership.locking.UserCreatedMeanwhile`, and the batch is
    retried."""
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
            f"""SELECT {PROFILE_COLUMNS} FROM users
                WHERE env_id = $1 AND (user_id = ANY($2) OR id = ANY($3))
                ORDER BY id FOR UPDATE""",
            env_id,
            user_ids,
            list(set(links.values())),
        )
        profiles = {r["id"]: profile_from_row(r) for r in rows}
        if all(pk in profiles for pk in links.values()):
            break
    by_user_id = {p.user_id: p.pk for p in profiles.values() if p.user_id is not None}
    missing = [u for u in user_ids if u not in by_user_id]
    if missing:
        for user_id, pk in zip(missing, await user_pks(conn, len(missing)), strict=True):
            # as the stored row would have been: seen at its first message of the batch
            profiles[pk] = Profile(
                pk=pk,
                user_id=user_id,
                attributes={},
                attr_ts={},
                first_seen=first[user_id],
                last_seen=first[user_id],
                version=0,
                new=True,
            )
            by_user_id[user_id] = pk
    # the batch's own new userIds are userIds too, though not stored yet
    taken = (anon & set(missing)) | {
        r["user_id"]
        for r in await conn.fetch(
            "SELECT user_id FROM users WHERE env_id = $1 AND user_id = ANY($2::text[])",
            env_id,
            list(anon),
        )
    }
    return BatchState(env_id, profiles, by_user_id, links, user_id_taken=taken)


def link(state: BatchState, anonymous_id: str, target: Profile, msg: InboxMessage) -> None:
    """Make ``anonymous_id`` resolve to ``target``, merging its anonymous profile if it has one.

    Refused (a warning; the message applies to its own userId) when ``anonymous_id`` is some
    user's userId: ``identify {userId: A, anonymousId: B}`` must not make B's answers A's."""
    current = state.anon_to_pk.get(anonymous_id)
    if anonymous_id in state.user_id_taken and current != target.pk:
        if target.user_id != anonymous_id:
            state.warnings.append(
                (
                    msg.messageId,
                    target.user_id,
                    None,
                    f"anonymousId {anonymous_id!r} is the userId of another user; user ids and "
                    "anonymous ids are separate, so it was not linked: the message applied to "
                    "its own userId",
                )
            )
        return
    target.anon_ids.add(anonymous_id)
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
    target.tag_ops = [*source.tag_ops, *target.tag_ops]
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


def resolve(state: BatchState, msg: InboxMessage) -> Profile:
    if msg.userId is not None:
        target = state.profiles[state.by_user_id[msg.userId]]
        for anonymous_id in (msg.anonymousId, msg.previousId):
            if anonymous_id is not None:
                link(state, anonymous_id, target, msg)
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
