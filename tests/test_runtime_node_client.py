"""The Node.js client (runtime/clients/node, npm `zeromq`) runs a whole session against the server."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime_helpers import ServerProcess, tiny_checkpoint

NODE_DIR = Path(__file__).resolve().parent.parent / "runtime" / "clients" / "node"


@pytest.fixture(scope="module")
def node_client():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the Node.js client cannot be run")
    if not (NODE_DIR / "node_modules" / "zeromq").is_dir():
        # CI installs it beforehand (npm ci); a fresh checkout installs it here.
        out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, f"npm ci failed in {NODE_DIR}:\n{out.stderr[-3000:]}"
    return NODE_DIR / "demo.js"


def test_node_client_runs_a_session(node_client, tmp_path):
    srv = ServerProcess(tiny_checkpoint(tmp_path / "tiny"))
    try:
        out = subprocess.run(["node", str(node_client), srv.endpoint, "4"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        srv.kill()
    assert summary["protocol"] == 2 and summary["block_size"] == 3 and summary["frame_shape"] == [24, 32, 3]
    assert summary["observed_next_frame"] == 3  # one block of engine frames went into memory first
    assert [s["first_frame"] for s in summary["steps"]] == [3, 6, 9, 12]
    assert [s["angle"] for s in summary["steps"]] == pytest.approx([16.875, 33.75, 50.625, 67.5])
    assert summary["memory_used"] == 5 and summary["memory_capacity"] == 24
    assert summary["decoded_shape"] == [3, 24, 32, 3] and summary["decoded_bytes"] == 3 * 24 * 32 * 3
    assert summary["bad_action_code"] == "bad_shape" and summary["closed"] is True
    assert "session s1 opened" in srv.log() and "closed by its client" in srv.log()
