"""SIGTERM stops the poller wherever its main thread is (agents.poller._StopFlag).

The handler runs in the poller's main thread between two bytecodes, so it can land in the
middle of the flag's own ``wait``. Each check runs in a child process: a handler that
blocks hangs the child, which the timeout turns into a failure instead of a hung suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Play the signal at every line that stop.wait() executes: a tracer calls stop.set(), as
# the handler would, at the n-th line event, for n = 1, 2, ... until wait() runs out of lines.
AT_EVERY_LINE = textwrap.dedent("""
    import sys
    from agents.poller import _StopFlag

    n = 1
    while True:
        stop, seen, fired = _StopFlag(), [0], [False]

        def tracer(frame, event, arg):
            if event == "line" and not fired[0]:
                seen[0] += 1
                if seen[0] == n:
                    fired[0] = True
                    sys.settrace(None)
                    print(f"set at line {n} ({frame.f_code.co_name}:{frame.f_lineno})", flush=True)
                    stop.set()
            return tracer

        sys.settrace(tracer)
        woke = stop.wait(0.01)
        sys.settrace(None)
        if not fired[0]:
            break
        assert woke and stop.is_set(), n
        n += 1
    print(f"lines {n - 1}", flush=True)
""")

# A real SIGTERM during a long wait ends it at once.
REAL_SIGNAL = textwrap.dedent("""
    import os, signal, threading, time
    from agents.poller import _StopFlag

    stop = _StopFlag()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    t0 = time.monotonic()
    woke = stop.wait(60.0)
    print(woke, round(time.monotonic() - t0, 3), flush=True)
""")


def _run(code: str, timeout_s: float = 60.0) -> str:
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        last = out.strip().splitlines()[-1] if out.strip() else "before the first line"
        raise AssertionError(f"stop.set() blocked: the child hung after '{last}'") from None
    assert proc.returncode == 0, err[-2000:]
    return out


def test_a_sigterm_at_any_line_of_the_wait_never_blocks():
    out = _run(AT_EVERY_LINE)
    lines = int(out.strip().splitlines()[-1].split()[1])
    assert lines >= 3  # the tracer really stepped through wait()'s lines


def test_a_sigterm_ends_a_long_wait_at_once():
    woke, seconds = _run(REAL_SIGNAL).split()
    assert woke == "True" and float(seconds) < 30.0  # the signal, not the 60 s timeout, ended it
