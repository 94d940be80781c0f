"""From request bytes to inbox rows: size limits, decoding, normalising, identity checks.

Everything here is synchronous and free of I/O, so the HTTP layer stays a thin shell around it:
it reads the body, authenticates, calls :func:`accept_single` or :func:`accept_batch`, and hands
the rows to the inbox writer.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

import msgspec

from services.ingest.identity import IdentityError, needs_identity_token, verify_identity
from services.ingest.inbox import Row
from shared.environments import Environment
from shared.http import ApiError, validation_field
from shared.json_guard import MAX_DEPTH, json_problem
from shared.messages import (
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    MessageError,
    WireMessage,
    inbox_encoder,
    normalise,
    wire_decoder,
)


class BatchEnvelope(msgspec.Struct, kw_only=True):
    """``POST /v1/batch``: messages stay raw so that one bad message can't sink the batch."""

    batch: list[msgspec.Raw]
    writeKey: str | None = None
    #: some libraries (analytics-python) send sentAt once for the whole batch
    sentAt: datetime | None = None
    context: Any = None


class Rejection(msgspec.Struct):
    """One message of a batch that was not accepted, and why."""

    index: int
    field: str | None
    error: str


class BatchResult(msgspec.Struct):
    success: bool
    accepted: int
    rejected: list[Rejection]


class BatchFailure(msgspec.Struct):
    """A batch in which no message was valid (422): the usual error shape plus the details."""

    error: str
    field: str | None
    rejected: list[Rejection]


_envelope_decoder = msgspec.json.Decoder(BatchEnvelope)


def check_request_size(length: int) -> None:
    """413 when a request body (announced or read) is over the per-request limit."""
    if length > MAX_REQUEST_BYTES:
        raise ApiError(
            413, f"request body larger than {MAX_REQUEST_BYTES // 1024} KB (the limit)", "body"
        )


def gunzip(body: bytes) -> bytes:
    """Inflate a gzip request body (as RudderStack and some Segment SDKs send), never past the
    request limit: a small bomb must not become a large allocation."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        out = inflater.decompress(body, MAX_REQUEST_BYTES + 1)
    except zlib.error as exc:
        raise ApiError(400, f"body: not valid gzip ({exc})", "body") from None
    check_request_size(len(out))
    return out


def _decode_wire(raw: bytes | msgspec.Raw) -> WireMessage:
    """One message, or a :class:`MessageError` naming the field: wrong shape, or a value
    :mod:`shared.json_guard` refuses (NUL, integer beyond 64 bits, nesting too deep)."""
    try:
        wire = wire_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        field, message = validation_field(exc)
        raise MessageError(field, message.removeprefix(f"{field}: ")) from None
    except RecursionError:
        raise MessageError("body", f"nested deeper than {MAX_DEPTH} levels") from None
    if (problem := json_problem(bytes(raw))) is not None:
        raise MessageError(*problem)
    return wire


def decode_message(body: bytes) -> WireMessage:
    """One message of a single-message endpoint: 400 when not JSON, 413 too large, 422 naming
    the field when it breaks a rule."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise ApiError(413, f"message larger than {MAX_MESSAGE_BYTES // 1024} KB", "body")
    try:
        return _decode_wire(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"body: malformed JSON ({exc})", "body") from None
    except MessageError as exc:
        raise ApiError(422, str(exc), exc.field) from None


def decode_envelope(body: bytes) -> BatchEnvelope:
    """The batch envelope: 400 when not JSON or over the batch limit, 422 of the wrong
    shape."""
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.ValidationError as exc:
        field, message = validation_field(exc)
        raise ApiError(422, message, field) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"body: malformed JSON ({exc})", "body") from None
    except RecursionError:
        raise ApiError(422, f"body: nested deeper than {MAX_DEPTH} levels", "body") from None
    if len(envelope.batch) > MAX_BATCH_MESSAGES:
        raise ApiError(
            400,
            f"batch: {len(envelope.batch)} messages, more than the limit of {MAX_BATCH_MESSAGES}",
            "batch",
        )
    if not envelope.batch:
        raise ApiError(422, "batch: holds no message", "batch")
    return envelope


def encode_message(
    wire: WireMessage,
    env: Environment,
    received_at: datetime,
    type_: str | None,
    token_max_age: float,
) -> bytes:
    """Normalise, verify identity when required, and encode for the inbox.

    Raises :class:`MessageError` (or its subclass :class:`IdentityError`).
    """
    msg = normalise(wire, received_at, type_)
    if needs_identity_token(env):
        verify_identity(env, msg.userId, wire.identityToken, token_max_age)
    return inbox_encoder.encode(msg)


def accept_single(
    wire: WireMessage, env: Environment, received_at: datetime, type_: str, token_max_age: float
) -> list[Row]:
    """The inbox row of a single-message request; 422 (401 for identity) when invalid."""
    try:
        body = encode_message(wire, env, received_at, type_, token_max_age)
    except IdentityError as exc:
        raise ApiError(401, str(exc), exc.field) from None
    except MessageError as exc:
        raise ApiError(422, str(exc), exc.field) from None
    return [(env.id, received_at, body)]


def accept_batch(
    envelope: BatchEnvelope, env: Environment, received_at: datetime, token_max_age: float
) -> tuple[list[Row], list[Rejection]]:
    """Rows of the valid messages of a batch, and a rejection for each invalid one."""
    rows: list[Row] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(envelope.batch):
        if len(raw) > MAX_MESSAGE_BYTES:
            rejected.append(
                Rejection(index, None, f"message larger than {MAX_MESSAGE_BYTES // 1024} KB")
            )
            continue
        try:
            wire = _decode_wire(raw)
        except MessageError as exc:
            rejected.append(Rejection(index, exc.field, str(exc)))
            continue
        if wire.sentAt is None:
            wire.sentAt = envelope.sentAt
        try:
            body = encode_message(wire, env, received_at, None, token_max_age)
            rows.append((env.id, received_at, body))
        except MessageError as exc:
            rejected.append(Rejection(index, exc.field, str(exc)))
    return rows, rejected


def batch_failure(rejected: list[Rejection]) -> BatchFailure:
    """The 422 body of a batch with no valid message, led by its first problem."""
    first = rejected[0]
    return BatchFailure(
        error=f"no valid message in the batch; batch[{first.index}]: {first.error}",
        field=f"batch[{first.index}].{first.field}" if first.field else f"batch[{first.index}]",
        rejected=rejected,
    )
