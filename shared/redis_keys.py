"""Every Redis key the services use, in one place.

Per-user keys are hash-tagged by environment and user (``{env:user}``) so that they stay on
one slot under Redis Cluster.
"""

from __future__ import annotations

#: arq queue the worker listens on (prefixed per deployment, see :func:`queue_name`).
QUEUE_SUFFIX = "arq:queue"


def queue_name(prefix: str) -> str:
    return f"{prefix}:{QUEUE_SUFFIX}"


#: User ids and anonymous ids are separate namespaces, Redis keys included: where either
#: travels as one string (the membership cache's "user": its keys, holds and refills), an
#: anonymous id carries this mark in front (:func:`anonymous`). NUL can be in no stored id
#: (PostgreSQL text refuses it, and so does every service), so the two never meet.
ANONYMOUS_MARK = "\x00"


def anonymous(anonymous_id: str) -> str:
    """``anonymous_id`` marked as an anonymous id for :func:`membership_key`."""
    return ANONYMOUS_MARK + anonymous_id


def membership_key(prefix: str, env_id: int, user_id: str) -> str:
    """The set of segment ids user ``user_id`` of environment ``env_id`` belongs to; for an
    anonymous id (marked by :func:`anonymous`) a key of its own namespace (``:a:``), so that
    no anonymous id can answer for a userId, nor the other way round."""
    if user_id.startswith(ANONYMOUS_MARK):
        return f"{prefix}:a:{{{env_id}:{user_id[1:]}}}"
    return f"{prefix}:m:{{{env_id}:{user_id}}}"


def recompute_job_id(prefix: str, env_id: int, segment_id: int, version: int) -> str:
    """arq job id of the bulk recompute of one version of a segment (enqueued once)."""
    return f"{prefix}:recompute:{env_id}:{segment_id}:{version}"


def drain_job_id(prefix: str) -> str:
    """arq job id of the inbox drain: one id, so a burst of requests makes one job."""
    return f"{prefix}:drain"


def cache_marker_key(prefix: str) -> str:
    """Set by the worker when it has (re)built the membership cache: if Redis loses it
    (restart, FLUSHALL), the worker's sweep notices and rebuilds."""
    return f"{prefix}:cache-built"


def cache_repairs_key(prefix: str) -> str:
    """How many membership sets the verifier has rewritten since Redis started (a counter)."""
    return f"{prefix}:cache-repairs"


def cache_repaired_at_key(prefix: str) -> str:
    """Unix time of the verifier's latest repair (``segments status`` judges drift by it)."""
    return f"{prefix}:cache-repaired-at"
