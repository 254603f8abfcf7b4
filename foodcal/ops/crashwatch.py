"""`python -m foodcal.ops.crashwatch`: supervisord's event listener under `make run` (supervisord.conf).

supervisord restarts any of our processes that exits: at once after a crash of a process that had
been running for `startsecs` (20 s), and after 1, 2, 3, 4 and 5 s when it keeps dying during its
start; then it gives the process up (FATAL). This listener adds what an operator needs on top:

- a process that keeps crashing is reported in one clear line (3 unexpected exits within 10
  minutes), and so is a process supervisord gave up on;
- a FATAL process is started again every `FOODCAL_RETRY_FATAL_S` seconds (60), so the backoff is
  capped rather than final: when the cause goes away (a port freed, a database back, `.env`
  fixed), the process comes back by itself.

It speaks supervisord's event listener protocol on stdin/stdout and reports on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable

CRASHES_TO_REPORT = 3
CRASH_WINDOW_S = 600.0
RETRY_FATAL_S = 60.0


class CrashWatch:
    """The policy, without I/O: feed it events, it says what to report and whom to start."""

    def __init__(
        self,
        report: Callable[[str], None],
        start: Callable[[str], None],
        retry_fatal_s: float = RETRY_FATAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report, self.start, self.retry_fatal_s, self.clock = report, start, retry_fatal_s, clock
        self.crashes: dict[str, deque[float]] = defaultdict(deque)
        self.retry_at: dict[str, float] = {}

    def exited(self, name: str, expected: bool) -> None:
        if expected:
            return
        now = self.clock()
        crashes = self.crashes[name]
        crashes.append(now)
        while crashes and crashes[0] < now - CRASH_WINDOW_S:
            crashes.popleft()
        if len(crashes) >= CRASHES_TO_REPORT:
            self.report(
                f"{name} keeps crashing: {len(crashes)} unexpected exits in the last "
                f"{CRASH_WINDOW_S / 60:.0f} minutes; supervisord restarts it each time. "
                "Its own output above says why."
            )
            crashes.clear()  # report again after the next few crashes, not after every one

    def fatal(self, name: str) -> None:
        self.retry_at[name] = self.clock() + self.retry_fatal_s
        self.report(
            f"{name} keeps dying while it starts; supervisord gave up after its quick retries. "
            f"Starting it again every {self.retry_fatal_s:g} s. Its own output above says why; "
            "`make status` shows every process."
        )

    def tick(self) -> None:
        now = self.clock()
        for name, when in list(self.retry_at.items()):
            if when <= now:
                del self.retry_at[name]
                self.report(f"starting {name} again")
                try:
                    self.start(name)
                except Exception as error:  # e.g. supervisord shutting down, or started meanwhile
                    self.report(f"could not start {name}: {error}")


def main() -> None:
    from supervisor import childutils

    rpc = childutils.getRPCInterface(os.environ)

    def report(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} CRASHWATCH {message}", file=sys.stderr, flush=True)

    watch = CrashWatch(
        report,
        lambda name: rpc.supervisor.startProcess(name, False),
        float(os.environ.get("FOODCAL_RETRY_FATAL_S", RETRY_FATAL_S)),
    )
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        event = headers["eventname"]
        if event.startswith("PROCESS_STATE_"):
            fields = childutils.get_headers(payload.split("\n", 1)[0])
            name = f"{fields['groupname']}:{fields['processname']}"
            if fields["groupname"] == fields["processname"]:
                name = fields["processname"]
            if event == "PROCESS_STATE_EXITED":
                watch.exited(name, fields.get("expected") == "1")
            elif event == "PROCESS_STATE_FATAL":
                watch.fatal(name)
        elif event.startswith("TICK_"):
            watch.tick()
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
