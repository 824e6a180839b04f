"""``approute metrics --shared NAME --listen 127.0.0.1:0`` as a child process of a
test: started with its port read from its first line, stopped by its pid (SIGTERM),
and checked to have stopped cleanly."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Tuple


def start_server(shared: str) -> Tuple[subprocess.Popen[str], str]:
    env = dict(os.environ)
    env.pop("APPROUTE_SHARED", None)
    proc = subprocess.Popen([sys.executable, "-m", "approute", "metrics", "--shared", shared,
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.search(r"status page http://(127\.0\.0\.1:\d+)/", line)
    if not m:
        proc.kill()
        raise AssertionError("no serving line: %r %r" % (line, proc.communicate(timeout=10)))
    return proc, m.group(1)


def stop_server(proc: subprocess.Popen[str]) -> str:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    rest = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0 and "Traceback" not in rest, rest
    return rest
