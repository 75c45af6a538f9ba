"""A worker process that dies with its parent, taking its own children (the ViZDoom engine) along.

A SIGKILLed `magworld data record` runs no cleanup, and ViZDoom's engine is a separate
executable that outlives the worker that started it; both went on recording and writing shards.
`die_with_parent` puts the worker in a process group of its own (the engine, started later,
joins it) and ends that whole group when the parent goes:

- Linux: prctl(PR_SET_PDEATHSIG, SIGTERM) makes the kernel signal the worker the moment its
  parent dies; the handler kills the group.
- Everywhere (and if the handler is late because the main thread is inside C code): a daemon
  thread polls the parent's pid every WATCH_INTERVAL_S and kills the group.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

WATCH_INTERVAL_S = 0.2
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a worker started by `parent_pid`."""
    os.setpgid(0, 0)  # the worker and every process it starts from now on: one group to end
    signal.signal(signal.SIGTERM, lambda *_: _end_group())
    if sys.platform.startswith("linux"):
        import ctypes

        # The death signal fires when the parent *thread* that forked us exits; the recorder
        # starts its workers from its main thread.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        _end_group()
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="parent-watch").start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL_S)
    _end_group()


def _end_group() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)  # this process included: nothing half-written is renamed
