"""``twincity connectors`` and ``twincity sandbox`` on a SQLite data directory: configure, list, status, sync
(a partner that is down is one clear line, exit 1), and the sandbox command refusing an unknown system."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.framework.cli import connectors, sandbox
from federation.extensions import build_services
from federation.members import service as members
from federation.migrate import upgrade_settings
from federation.settings import load_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("TWINCITY_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TWINCITY_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TWINCITY_LOG_JSON", "false")
    settings = load_settings()
    upgrade_settings(settings)

    async def member() -> None:
        svc = build_services(settings)
        async with svc.db.uow() as uow:
            await members.upsert(uow, members.NewInstitution("CQSI", "重庆市社会保险事务中心", "system"))
            await uow.commit()
        await svc.close()

    asyncio.run(member())
    return tmp_path / "var"


def test_configure_list_status_and_a_failing_sync(data_dir):
    runner = CliRunner()
    args = ["configure", "ss-cli", "--kind", "social_security", "--member", "CQSI", "--base-url"]
    args += ["http://127.0.0.1:9", "--set", "max_attempts=1", "--set", "connect_timeout_s=0.5"]
    result = runner.invoke(connectors, [*args, "--secret", "api_key=s3cret"])
    assert result.exit_code == 0, result.output

    result = runner.invoke(connectors, ["list"])
    assert result.exit_code == 0 and "ss-cli\tsocial_security\tCQSI\tclosed" in result.output

    result = runner.invoke(connectors, ["sync", "ss-cli"])
    assert result.exit_code == 1
    assert "connectors.unreachable" in result.output and "Traceback" not in result.output

    result = runner.invoke(connectors, ["status"])
    assert result.exit_code == 0
    (health,) = json.loads(result.output)
    assert health["last_error_code"] == "connectors.unreachable" and "s3cret" not in result.output

    bad = runner.invoke(connectors, ["configure", "ss-cli", "--kind", "nope", "--member", "CQSI", "--base-url", "x"])
    assert bad.exit_code == 1 and "unknown connector kind" in bad.output
    result = runner.invoke(connectors, ["sync", "missing"])
    assert result.exit_code == 1 and "connectors.not_found" in result.output


def test_sandbox_names_the_systems_it_knows(data_dir):
    from connectors import register
    from connectors.framework.sandbox import DEMO_PORTS
    from connectors.social_security.demo import SYSTEMS
    from federation.extensions import Registry

    register(Registry())  # fills the sandbox table, as the twincity command does
    result = CliRunner().invoke(sandbox, ["nowhere"])
    assert result.exit_code == 1 and "social_security" in result.output
    # ``twincity sandbox all`` serves each demo system where the demo's connector calls it
    assert {DEMO_PORTS["social_security_chongqing"], DEMO_PORTS["social_security_sichuan"]} == {s[-1] for s in SYSTEMS}
