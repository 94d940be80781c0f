"""compose.yaml: crashed containers restart, keys are required, ports stay on loopback."""

from __future__ import annotations

from typing import Any

import yaml  # type: ignore[import-untyped]  # (installed with uvicorn[standard])

from tests.conftest import ROOT


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    return services


def test_long_running_containers_restart_when_they_crash() -> None:
    for name, service in _services().items():
        expected = "on-failure" if name == "setup" else "unless-stopped"
        assert service.get("restart") == expected, name


def test_keys_are_required_and_ports_published_on_loopback_by_default() -> None:
    for name, service in _services().items():
        env = service.get("environment", {})
        for variable in ("SEGMENTS_DEV_WRITE_KEY", "SEGMENTS_DEV_SECRET_KEY"):
            if variable in env:
                assert env[variable].startswith(f"${{{variable}:?"), (name, env[variable])
        assert "change_me" not in str(env)
        for port in service.get("ports", []):
            assert port.split("}")[0].endswith(":-127.0.0.1"), (name, port)
