"""Fixtures of the SDK contract tests: an :class:`Api` client of the real services for one
fresh environment (the same helper the end-to-end tests use)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.environments import EnvironmentKeys
from tests.conftest import ServiceStack
from tests.e2e.conftest import Api


@pytest.fixture
async def api(stack: ServiceStack, env: EnvironmentKeys) -> AsyncIterator[Api]:
    client = Api(stack, env)
    yield client
    await client.close()
