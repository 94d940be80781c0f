"""Writing a applied batch back with set-based SQL: profiles, identities, merges, events,
companies and warnings."""

from __future__ import annotations

import msgspec

from services.worker.companies import apply_company_ops
from services.worker.identity import BatchState, user_pks
from shared.db import Conn
from shared.membership import inserted_version
from shared.membership.locking import UserCreatedMeanwhile

_json = msgspec.json.Encoder()


async def write_profiles(conn: Conn, state: BatchState, *, bumped: bool) -> dict[int, int]:
    """Insert the new profiles, each once with what the batch made of it, and update the
    rest; returns {temp pk: real pk} of the new anonymous ones. Raises
    :class:`UserCreatedMeanwhile` when another transaction created one of the new identified
    users since :func:`services.worker.identity.load_state` found it missing. Membership
    versions are the store's to bump (:func:`shared.membership.bump_versions`); ``bumped``:
    the caller will bump every new profile, which is therefore inserted at its
    :func:`shared.membership.inserted_version` and must not be bumped again."""
    env_id = state.env_id
    new = [p for p in state.profiles.values() if p.new]
    real: dict[int, int] = {}
    if new:
        anonymous = [p for p in new if p.user_id is None]
        if anonymous:
            pks = await user_pks(conn, len(anonymous))
            for profile, pk in zip(anonymous, pks, strict=True):
                real[profile.pk] = pk
                profile.pk = pk
        # in userId order: two batches creating the same users wait for each other rather
        # than deadlock
        inserted = await conn.fetchval(
            """WITH inserted AS (
                   INSERT INTO users (env_id, id, user_id, attributes, attr_ts, first_seen_at,
                                      last_seen_at, membership_version)
                   OVERRIDING SYSTEM VALUE
                   SELECT $1, i, u, a::jsonb, t::jsonb, to_timestamp(f / 1000.0),
                          to_timestamp(l / 1000.0), v
                   FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                               $7::bigint[], $8::bigint[]) AS x(i, u, a, t, f, l, v)
                   ORDER BY u
                   ON CONFLICT (env_id, user_id) WHERE user_id IS NOT NULL DO NOTHING
                   RETURNING 1)
               SELECT count(*) FROM inserted""",
            env_id,
            [p.pk for p in new],
            [p.user_id for p in new],
            [_json.encode(p.attributes).decode() for p in new],
            [_json.encode(p.attr_ts).decode() for p in new],
            [p.first_seen for p in new],
            [p.last_seen for p in new],
            [inserted_version(p.version) if bumped else 0 for p in new],
        )
        if inserted != len(new):
            raise UserCreatedMeanwhile(
                f"{len(new) - inserted} of the batch's new users were created meanwhile"
            )
    old = [p for p in state.profiles.values() if not p.new]
    if old:
        await conn.execute(
            """UPDATE users u SET attributes = x.a::jsonb, attr_ts = x.t::jsonb,
                      first_seen_at = to_timestamp(x.f / 1000.0),
                      last_seen_at = to_timestamp(x.l / 1000.0),
                      updated_at = now()
               FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
                 AS x(i, a, t, f, l)
               WHERE u.env_id = $1 AND u.id = x.i""",
            env_id,
            [p.pk for p in old],
            [_json.encode(p.attributes).decode() for p in old],
            [_json.encode(p.attr_ts).decode() for p in old],
            [p.first_seen for p in old],
            [p.last_seen for p in old],
        )
    return real


async def write_rest(conn: Conn, state: BatchState, real: dict[int, int]) -> None:
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
            """INSERT INTO event_counts (env_id, user_pk, name, day, count)
               SELECT env_id, $2, name, day, sum(count) FROM event_counts
               WHERE env_id = $1 AND user_pk = ANY($3) GROUP BY env_id, name, day
               ON CONFLICT (env_id, user_pk, name, day)
               DO UPDATE SET count = event_counts.count + EXCLUDED.count""",
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
        # per-user, per-event, per-UTC-day counts: what event conditions read
        await conn.execute(
            """INSERT INTO event_counts (env_id, user_pk, name, day, count)
               SELECT $1, u, n, (to_timestamp(t / 1000.0) AT TIME ZONE 'UTC')::date, count(*)
               FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS x(u, n, t)
               GROUP BY 2, 3, 4
               ON CONFLICT (env_id, user_pk, name, day)
               DO UPDATE SET count = event_counts.count + EXCLUDED.count""",
            env_id,
            [real.get(e[0], e[0]) for e in state.events],
            [e[1] for e in state.events],
            [e[3] for e in state.events],
        )
    if state.company_ops:
        warnings = await apply_company_ops(conn, env_id, state.company_ops, state.changed_companies)
        for name, warning, message_id in warnings:
            state.warnings.append((message_id, None, name, warning))
    if state.warnings:
        await conn.execute(
            """INSERT INTO ingest_warnings (env_id, message_id, user_id, attribute, warning)
               SELECT $1, m, u, a, w FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                 AS x(m, u, a, w)""",
            env_id,
            *(list(col) for col in zip(*state.warnings, strict=True)),
        )
