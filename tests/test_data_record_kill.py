"""A SIGKILLed `magworld data record` leaves nothing running or writing, and `data check` calls
the dataset it leaves incomplete."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from worldmodel.data.shards import list_shards
from worldmodel.data.validate import check_dataset


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has stopped; only its exit status is left


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _wait(condition, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_sigkill_of_the_recorder_stops_its_workers_and_engines(tmp_path):
    out = tmp_path / "ds"
    recorder = subprocess.Popen(
        [sys.executable, "-m", "worldmodel.cli", "data", "record", "--frames", "100000", "--workers", "2",
         "--episode-frames", "60", "--shard-frames", "30", "--maps", "freedoom2.wad:MAP01", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    family: set[int] = set()
    try:
        # Running and writing: both workers' engines are up and a shard is on disk.
        assert _wait(lambda: len(list_shards(out)) >= 1, 60), "the recorder wrote no shard"
        family = _descendants(recorder.pid)
        engines = [p for p in family if "vizdoom" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        assert len(engines) == 2, family
        recorder.send_signal(signal.SIGKILL)
        recorder.wait()
        assert _wait(lambda: not any(_alive(p) for p in family), 5), \
            f"still running after the recorder was killed: {[p for p in family if _alive(p)]}"
        shards = list_shards(out)
        time.sleep(1.0)
        assert list_shards(out) == shards, "shards kept appearing after the recorder was killed"
    finally:
        for p in family:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    problems, summary = check_dataset(out)
    assert any(f"incomplete, {summary['frames']} of the 100000 frames requested" in p for p in problems), problems
