"""The hostile-input suite runs against the session's real services (``stack``)."""

from __future__ import annotations

from tests.e2e.conftest import api

__all__ = ["api"]
