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


def test_node_client_gives_up_on_a_send_that_cannot_go_out(node_client, tmp_path):
    # As the Python client: a socket with no peer to queue to (here: only completed connections
    # count, and nothing listens) must fail the try after its timeout, not wait forever.
    script = tmp_path / "stuck.js"
    script.write_text(f"""
const {{ MagworldClient }} = require({json.dumps(str(NODE_DIR / "client.js"))});
class Immediate extends MagworldClient {{
  _connect() {{  // the client's own socket and timeouts, made to queue to completed connections only
    super._connect();
    this.socket.disconnect(this.endpoint);
    this.socket.immediate = true;
    this.socket.connect(this.endpoint);
  }}
}}
const start = Date.now();
new Immediate("tcp://127.0.0.1:9", {{ timeoutMs: 300, retries: 1 }}).info().then(
  () => {{ console.log("unexpected reply"); process.exit(1); }},
  (e) => {{ console.log(JSON.stringify({{ message: e.message, ms: Date.now() - start }})); process.exit(0); }});
""")
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "after 2 tries" in result["message"] and result["ms"] < 5000
