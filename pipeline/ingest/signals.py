"""A graceful stop on SIGINT/SIGTERM: the first signal lets the batches in flight finish and be written (the rest
are counted as not processed, for the next run to take up); a second one stops the process at once."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def graceful_stop(announce: Callable[[str], None] | None = None) -> Iterator["StopSignal"]:
    """Install the handlers (from the main thread only; elsewhere nothing is installed) for the ``with`` block.

    Yields a ``StopSignal`` whose ``event`` goes into ``IngestOptions.stop``. ``announce(message)`` is called once,
    from a watcher thread, when the first signal arrives (default: a line on stderr); the handler itself only sets
    flags, since writing inside a handler can collide with a progress bar's write. The previous handlers are put
    back on exit.
    """
    stopping = StopSignal(announce or _to_stderr)
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.05):
            stopping.announce()

    threading.Thread(target=watch, name="mmindex-signals", daemon=True).start()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stopping.on_signal)
    try:
        yield stopping
    finally:
        finished.set()
        stopping.announce()  # if the run ended before the watcher saw the signal
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopSignal:
    """What a ``graceful_stop`` block saw: ``event`` (set by the first signal) and ``received`` (signal numbers)."""

    def __init__(self, announce: Callable[[str], None]):
        self.event = threading.Event()
        self.received: list[int] = []
        self._announce = announce
        self._announced = threading.Lock()

    @property
    def first(self) -> int | None:
        """The first signal received, or None."""
        return self.received[0] if self.received else None

    def on_signal(self, signum, frame) -> None:
        if self.event.is_set():
            os.write(2, f"\n{signal.Signals(signum).name} again: stopping now; rows in flight are taken up by "
                        "the next run\n".encode())
            os._exit(128 + signum)
        self.received.append(signum)
        self.event.set()

    def announce(self) -> None:
        if self.event.is_set() and self._announced.acquire(blocking=False):
            self._announce(f"{signal.Signals(self.received[0]).name}: finishing the batches in flight, then stopping "
                           "(send it again to stop at once)")


def _to_stderr(message: str) -> None:
    # In a terminal the note must leave the progress bar's line; a log has whole lines already.
    sys.stderr.write(("\n" if sys.stderr.isatty() else "") + message + "\n")
    sys.stderr.flush()
