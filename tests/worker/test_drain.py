"""The worker's drain on the real PostgreSQL and Redis: merge rules, identity, dedup,
companies, manual segments, membership and the Redis copy."""

from __future__ import annotations

import msgspec

from shared.environments import EnvironmentKeys
from shared.membership.cache import parse_members
from tests.worker.conftest import Worker

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"
T2 = "2026-01-01T00:02:00Z"


async def test_identify_creates_and_updates_a_profile(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id,
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"plan": "free", "address": {"city": "Paris"}},
        },
    )
    assert await worker.drain() == 1
    assert await worker.profile(env.id, "u1") == {"plan": "free", "address.city": "Paris"}
    await worker.send(
        env.id, {"type": "identify", "userId": "u1", "traits": {"plan": "pro", "seats": {"add": 3}}}
    )
    await worker.drain()
    assert await worker.profile(env.id, "u1") == {
        "plan": "pro",
        "address.city": "Paris",
        "seats": 3,
    }
    assert await worker.pool.fetchval("SELECT count(*) FROM inbox WHERE env_id = $1", env.id) == 0


async def test_older_message_never_overwrites_newer(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "timestamp": T2, "traits": {"plan": "pro"}}
    )
    await worker.drain()
    await worker.send(
        env.id,
        {"type": "identify", "userId": "u", "timestamp": T1, "traits": {"plan": "free", "x": 1}},
    )
    await worker.drain()
    assert await worker.profile(env.id, "u") == {"plan": "pro", "x": 1}


async def test_same_batch_ordered_by_timestamp(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id,
        {"type": "identify", "userId": "u", "timestamp": T2, "traits": {"plan": "new"}},
        {"type": "identify", "userId": "u", "timestamp": T0, "traits": {"plan": "old"}},
    )
    await worker.drain()
    assert await worker.profile(env.id, "u") == {"plan": "new"}


async def test_duplicate_message_ids_apply_once(worker: Worker, env: EnvironmentKeys) -> None:
    msg = {"type": "identify", "userId": "u", "messageId": "m-1", "traits": {"n": {"add": 1}}}
    await worker.send(env.id, msg, msg)
    await worker.drain()
    await worker.send(env.id, msg)
    await worker.drain()
    assert await worker.profile(env.id, "u") == {"n": 1}
    # the same messageId in another environment is another message
    other = await _other_env(worker)
    await worker.send(other, msg)
    await worker.drain()
    assert await worker.profile(other, "u") == {"n": 1}


async def _other_env(worker: Worker) -> int:
    from shared.environments import ensure_environment

    async with worker.pool.acquire() as conn:
        keys = await ensure_environment(conn, f"other-{id(worker)}")
    return keys.id


async def test_anonymous_merges_into_identified(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id,
        {"type": "identify", "userId": "alice", "timestamp": T0, "traits": {"plan": "pro"}},
    )
    await worker.drain()
    await worker.send(
        env.id,
        {
            "type": "identify",
            "anonymousId": "anon-1",
            "timestamp": T0,
            "traits": {"plan": "free", "lang": "fr"},
        },
        {"type": "track", "anonymousId": "anon-1", "timestamp": T0, "event": "Viewed"},
    )
    await worker.drain()
    anon_pk = await worker.pool.fetchval(
        "SELECT user_pk FROM identities WHERE env_id = $1 AND anonymous_id = 'anon-1'", env.id
    )
    assert anon_pk is not None
    await worker.send(
        env.id, {"type": "identify", "userId": "alice", "anonymousId": "anon-1", "timestamp": T1}
    )
    await worker.drain()
    assert await worker.profile(env.id, "alice") == {"plan": "pro", "lang": "fr"}
    alice_pk = await worker.pool.fetchval(
        "SELECT id FROM users WHERE env_id = $1 AND user_id = 'alice'", env.id
    )
    events = await worker.pool.fetch("SELECT user_pk FROM events WHERE env_id = $1", env.id)
    assert [e["user_pk"] for e in events] == [alice_pk]
    assert (
        await worker.pool.fetchval(
            "SELECT user_pk FROM identities WHERE env_id = $1 AND anonymous_id = 'anon-1'", env.id
        )
        == alice_pk
    )
    assert (
        await worker.pool.fetchval(
            "SELECT count(*) FROM users WHERE env_id = $1 AND id = $2", env.id, anon_pk
        )
        == 0
    )
    # later anonymous messages resolve to alice for ever
    await worker.send(
        env.id, {"type": "identify", "anonymousId": "anon-1", "timestamp": T2, "traits": {"x": 1}}
    )
    await worker.drain()
    assert (await worker.profile(env.id, "alice") or {}).get("x") == 1


async def test_merge_within_one_batch(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id,
        {"type": "track", "anonymousId": "a2", "timestamp": T0, "event": "Opened"},
        {"type": "identify", "anonymousId": "a2", "timestamp": T0, "traits": {"lang": "de"}},
        {"type": "identify", "userId": "bob", "anonymousId": "a2", "timestamp": T1},
    )
    await worker.drain()
    assert await worker.profile(env.id, "bob") == {"lang": "de"}
    assert await worker.pool.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env.id) == 1
    assert await worker.pool.fetchval("SELECT count(*) FROM events WHERE env_id = $1", env.id) == 1


async def test_two_identified_users_are_never_merged(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id, {"type": "identify", "userId": "u1", "anonymousId": "shared", "traits": {"a": 1}}
    )
    await worker.drain()
    await worker.send(
        env.id, {"type": "identify", "userId": "u2", "anonymousId": "shared", "traits": {"b": 2}}
    )
    await worker.drain()
    assert await worker.profile(env.id, "u1") == {"a": 1}
    assert await worker.profile(env.id, "u2") == {"b": 2}
    warnings = await worker.pool.fetch(
        "SELECT warning FROM ingest_warnings WHERE env_id = $1", env.id
    )
    assert any("never merged" in w["warning"] for w in warnings)


async def test_alias_links_previous_anonymous_id(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(env.id, {"type": "identify", "anonymousId": "pre", "traits": {"src": "ad"}})
    await worker.drain()
    await worker.send(env.id, {"type": "alias", "userId": "carol", "previousId": "pre"})
    await worker.drain()
    assert await worker.profile(env.id, "carol") == {"src": "ad"}


async def test_group_creates_company_and_membership(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id,
        {
            "type": "group",
            "userId": "u",
            "groupId": "acme",
            "traits": {"seats": 50},
            "membership": {"role": "admin"},
        },
    )
    await worker.drain()
    company = await worker.pool.fetchrow(
        "SELECT id, attributes FROM companies WHERE env_id = $1 AND company_id = 'acme'", env.id
    )
    assert company is not None and company["attributes"] == {"seats": 50}
    member = await worker.pool.fetchrow(
        "SELECT attributes FROM company_members WHERE env_id = $1 AND company_pk = $2",
        env.id,
        company["id"],
    )
    assert member is not None and member["attributes"] == {"role": "admin"}


async def test_manual_segment_operations(worker: Worker, env: EnvironmentKeys) -> None:
    for key in ("a", "b", "c"):
        await worker.pool.execute(
            "INSERT INTO segments (env_id, key, name, kind) VALUES ($1, $2, $2, 'manual')",
            env.id,
            key,
        )
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "timestamp": T0, "segments": ["c", "nope"]}
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "c"}
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "timestamp": T1, "segments": ["~", "a", "b"]}
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "a", "b"}
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "timestamp": T2, "segments": ["~b"]}
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "a"}


async def test_dynamic_membership_follows_the_profile(worker: Worker, env: EnvironmentKeys) -> None:
    seg_id = await worker.pool.fetchval(
        """INSERT INTO segments (env_id, key, name, kind, conditions)
           VALUES ($1, 'pro', 'Pro', 'dynamic', $2) RETURNING id""",
        env.id,
        {"attribute": "plan", "op": "is", "value": "pro"},
    )
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "timestamp": T0, "traits": {"plan": "pro"}}
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "pro"}
    members = await worker.cache.redis.smembers(worker.cache.key(env.id, "u"))  # type: ignore[misc]
    version, ids = parse_members(members)
    assert version is not None and seg_id in ids
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "timestamp": T1, "traits": {"plan": "free"}}
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users"}
    version2, ids2 = parse_members(
        await worker.cache.redis.smembers(worker.cache.key(env.id, "u"))  # type: ignore[misc]
    )
    assert version2 is not None and version2 > version and seg_id not in ids2
    log = await worker.pool.fetch(
        """SELECT entered FROM membership_changes WHERE env_id = $1 AND segment_id = $2
           ORDER BY id""",
        env.id,
        seg_id,
    )
    assert [r["entered"] for r in log] == [True, False]


async def test_undecodable_row_is_kept_as_a_dead_letter(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await worker.pool.execute(
        "INSERT INTO inbox (env_id, body) VALUES ($1, $2)", env.id, b"\xc1junk"
    )
    await worker.send(env.id, {"type": "identify", "userId": "fine", "traits": {"ok": True}})
    await worker.drain()
    assert await worker.profile(env.id, "fine") == {"ok": True}
    dead = await worker.pool.fetch("SELECT body FROM dead_letters WHERE env_id = $1", env.id)
    assert [bytes(d["body"]) for d in dead] == [b"\xc1junk"]


async def test_events_are_stored(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id,
        {"type": "track", "userId": "u", "event": "Clicked", "properties": {"k": "v"}},
        {"type": "page", "userId": "u", "name": "Home"},
    )
    await worker.drain()
    rows = await worker.pool.fetch(
        "SELECT name, properties FROM events WHERE env_id = $1 ORDER BY name", env.id
    )
    assert [(r["name"], r["properties"]) for r in rows] == [
        ("Clicked", {"k": "v"}),
        ("Page Viewed", {"name": "Home"}),
    ]
    assert msgspec.json.encode(rows[0]["properties"]) == b'{"k":"v"}'


async def _tags_of(worker: Worker, env_id: int, user_id: str) -> set[tuple[str, str]]:
    rows = await worker.pool.fetch(
        """SELECT t.key, t.value FROM user_tags ut
           JOIN tags t ON t.env_id = ut.env_id AND t.id = ut.tag_id
           JOIN users u ON u.env_id = ut.env_id AND u.id = ut.user_pk
           WHERE ut.env_id = $1 AND u.user_id = $2""",
        env_id,
        user_id,
    )
    return {(r["key"], r["value"]) for r in rows}


async def test_tags_from_identify_apply_in_order(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id,
        {
            "type": "identify",
            "userId": "t",
            "timestamp": T0,
            "tags": ["Department:Sales", "Location:Dallas", "Location:Paris", "Role:Lead"],
        },
    )
    await worker.drain()
    assert await _tags_of(worker, env.id, "t") == {
        ("Department", "Sales"),
        ("Location", "Dallas"),
        ("Location", "Paris"),
        ("Role", "Lead"),
    }
    await worker.send(
        env.id,
        {
            "type": "identify",
            "userId": "t",
            "timestamp": T1,
            "tags": ["~Location", "~Role:Lead", {"key": "a:b", "value": "c"}],
        },
    )
    await worker.drain()
    assert await _tags_of(worker, env.id, "t") == {("Department", "Sales"), ("a:b", "c")}
    await worker.send(
        env.id, {"type": "identify", "userId": "t", "timestamp": T2, "tags": ["~", "X:1"]}
    )
    await worker.drain()
    assert await _tags_of(worker, env.id, "t") == {("X", "1")}


async def test_anonymous_tags_move_to_the_identified_user(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await worker.send(env.id, {"type": "identify", "anonymousId": "ta", "tags": ["Source:Ad"]})
    await worker.drain()
    await worker.send(
        env.id, {"type": "identify", "userId": "tu", "anonymousId": "ta", "tags": ["Plan:Pro"]}
    )
    await worker.drain()
    assert await _tags_of(worker, env.id, "tu") == {("Source", "Ad"), ("Plan", "Pro")}
