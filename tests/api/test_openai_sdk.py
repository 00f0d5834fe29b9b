"""Runs the official openai npm SDK tests (tests/api/openai_sdk, node --test)
against a real synapsex with the loopback mock upstream as synapsex-chat and,
when the fixtures are present, the tiny local model as synapsex-local."""
import os
import shutil
import subprocess

import pytest

from conftest import Api, SENSITIVE, unique_slug
from mock_upstream import MockUpstream, start_synapsex, stop_synapsex, tiny_model

SDK_DIR = os.path.join(os.path.dirname(__file__), "openai_sdk")


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="skipped: node/npm absent (scripts/deps.sh --test installs them)")
def test_openai_sdk():
    if not os.path.isdir(os.path.join(SDK_DIR, "node_modules", "openai")):
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SDK_DIR,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
    mock = MockUpstream()
    args = ["--upstream", f"synapsex-chat={mock.url}"]
    local = tiny_model()
    if local:
        args += ["--model", f"synapsex-local={local}"]
    srv = start_synapsex(args)
    try:
        api = Api(srv)
        slug = unique_slug("farmacia")
        _, tenant_key = api.create_tenant(slug=slug, tier="pro")
        _, free_key = api.create_tenant(tier="free")
        r = api.apost("/admin/platform-keys", json={"name": "sdk"})
        assert r.status_code in (200, 201), r.text
        platform_key = r.json()["api_key"]
        SENSITIVE.add_secret(platform_key)
        env = dict(os.environ, SX_BASE_URL=srv.base, SX_TENANT_KEY=tenant_key,
                   SX_TENANT_SLUG=slug, SX_PLATFORM_KEY=platform_key,
                   SX_FREE_KEY=free_key, SX_LOCAL_MODEL="synapsex-local" if local else "")
        r = subprocess.run(["node", "--test", "sdk.test.mjs"], cwd=SDK_DIR, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"node --test failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
        assert "# fail 0" in r.stdout, r.stdout[-3000:]
        print(r.stdout[-400:])
    finally:
        stop_synapsex(srv)
        mock.close()
