"""Memory held stays within the session's budget however long it runs (2,000 frames, real server)."""

import numpy as np
import pytest

from runtime.bench_soak import rss_bytes
from runtime.client import Client
from runtime_helpers import ServerProcess, tiny_checkpoint

FRAMES = 2000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tiny_checkpoint(tmp_path_factory.mktemp("tiny")))
    yield srv
    srv.kill()


def walk(block: int, i: int) -> np.ndarray:
    """A walk round a square room and back: forward, then turn, so places come round again."""
    a = np.zeros((block, 4), np.float32)
    if (i // 4) % 2:
        a[:, 0] = 22.5  # turning on the spot
    else:
        a[:, 2] = 25.0  # walking forward
    return a


@pytest.mark.parametrize("strategy, frames", [("mag", FRAMES), ("full", 300), ("window", 300)])
def test_memory_stays_within_budget(server, strategy, frames):
    with Client(server.endpoint, timeout_s=60) as c:
        bps = c.info().memory["bytes_per_slot"]
        budget = 10 * bps + bps // 2  # a byte budget that is not a whole number of slots
        c.reset(seed=1, strategy=strategy, memory_bytes=budget, revisit_decode=False)
        revisits, rss = 0, []
        blocks = frames // 3
        for i in range(blocks):
            block = c.step(walk(3, i))
            revisits += block.revisit is not None
            if i % 50 == 0 or i == blocks - 1:
                mem = c.memory()
                assert mem["capacity"] == 10 and mem["used"] <= 10
                assert mem["bytes_held"] <= budget and mem["bytes_allocated"] <= budget
                if i == 100 or i == blocks - 1:
                    rss.append(rss_bytes(server.proc.pid))
        assert mem["next_frame"] == blocks * 3
        assert mem["used"] == (9 if strategy == "window" else 10)  # window holds only sinks + window: 3 + 6
        assert mem["evictions"] > 0  # the budget was full and slots were reused
        assert mem["full_cache_bytes"] > 20 * budget or frames < FRAMES  # what an uncompressed cache would need
        if strategy == "mag":
            assert revisits > 10  # the walk comes back to the same places
            assert rss[-1] - rss[0] < 32 * 2**20, f"server grew by {(rss[-1] - rss[0]) / 2**20:.1f} MiB"
        c.close()
