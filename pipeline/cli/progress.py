"""Progress on stderr: a redrawn bar in a terminal, one plain line every few seconds in logs.

Under cron, systemd or Kubernetes stderr is a file or a pipe, where a redrawn bar (``\\r``)
turns into one unreadable line; there each report is a whole line instead, and notes such as
"building the vector index" stand on lines of their own.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, TextIO

DEFAULT_INTERVAL = 30.0


def open_progress(desc: str, unit: str, total: int | None = None, *, quiet: bool = False,
                  interval: float = DEFAULT_INTERVAL, stream: TextIO | None = None):
    """A progress reporter for ``total`` units (``None``: unknown) on ``stream`` (default stderr).

    A terminal gets a tqdm bar; anything else a ``LineProgress`` that writes a line every
    ``interval`` seconds. Both offer ``update(n, rejected=None)``, ``write(note)``,
    ``set_postfix(**fields)`` and ``close()``, and work as context managers.
    """
    stream = stream or sys.stderr
    if not quiet and _is_terminal(stream):
        return _TerminalProgress(desc, unit, total, stream)
    return LineProgress(desc, unit, total, interval=interval, stream=stream, quiet=quiet)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


class LineProgress:
    """Progress as whole lines: ``ingest: 1,200/5,000 rows (24.0%), 41.2 rows/s, 3 rejected, ETA 1m32s``.

    A line is written every ``interval`` seconds, whether or not work was finished in between
    (a stalled run still says so), and once more by ``close`` unless nothing changed since the
    last one. ``interval=0`` writes a line on every ``update``. ``quiet`` writes nothing at all.
    ``ticker=False`` leaves the timed lines to ``update`` alone (tests drive a fake clock).
    """

    def __init__(self, desc: str, unit: str, total: int | None = None, *, interval: float = DEFAULT_INTERVAL,
                 stream: TextIO | None = None, quiet: bool = False, clock: Callable[[], float] = time.monotonic,
                 ticker: bool = True):
        self.desc, self.unit, self.total = desc, unit, total
        self.interval, self.stream, self.quiet, self.clock = interval, stream or sys.stderr, quiet, clock
        self.done = 0
        self.rejected: int | None = None
        self.postfix: dict[str, Any] = {}
        self.started = clock()
        self.last_line = self.started
        self.last_done: int | None = None  # ``done`` when the last line was written
        self.closed = False
        self.lock = threading.Lock()  # the ticker thread and the callers' threads both write
        self.stopped = threading.Event()
        if ticker and interval > 0 and not quiet:
            threading.Thread(target=self._tick, name=f"mmindex-{desc}-progress", daemon=True).start()

    def _tick(self) -> None:
        while not self.stopped.wait(self.interval / 4):
            with self.lock:
                now = self.clock()
                if not self.closed and now - self.last_line >= self.interval:
                    self._report(now)

    def update(self, n: int = 1, rejected: int | None = None) -> None:
        """Count ``n`` more units done; ``rejected`` is the running total of rejected rows, if known."""
        with self.lock:
            self.done += n
            if rejected is not None:
                self.rejected = rejected
            now = self.clock()
            if now - self.last_line >= self.interval:
                self._report(now)

    def _report(self, now: float, final: bool = False) -> None:
        self.last_line, self.last_done = now, self.done
        self._emit(self.line(now, final))

    def set_postfix(self, **fields: Any) -> None:
        """Extra ``name=value`` fields shown at the end of the next line (e.g. a training loss)."""
        self.postfix = fields

    def write(self, message: str) -> None:
        """A note on a line of its own."""
        with self.lock:
            self._emit(message)

    def refresh(self) -> None:
        """Nothing to redraw: lines are written as they come."""

    def line(self, now: float | None = None, final: bool = False) -> str:
        """The current report as one line (no newline); a ``final`` one has no ETA."""
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.desc}: {self.done:,}" + (f"/{self.total:,}" if self.total is not None else "")
                 + f" {self.unit}" + (f" ({self.done / self.total:.1%})" if self.total else ""),
                 f"{rate:,.1f} {self.unit}/s", f"elapsed {format_seconds(elapsed)}"]
        if self.rejected is not None:
            parts.insert(2, f"{self.rejected:,} rejected")
        if not final and self.total is not None and self.done < self.total and rate > 0:
            parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        parts += [f"{name}={value}" for name, value in self.postfix.items()]
        return ", ".join(parts)

    def close(self) -> None:
        """Stop the timed lines and write the last one (once; skipped if nothing changed since a line)."""
        self.stopped.set()
        with self.lock:
            if not self.closed:
                self.closed = True
                if self.done != self.last_done:
                    self._report(self.clock(), final=True)

    def _emit(self, text: str) -> None:
        if self.quiet:
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # the stream was closed (the caller went away): progress is best effort
            self.quiet = True
            self.stopped.set()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _TerminalProgress:
    """tqdm's bar with the same small interface as ``LineProgress``."""

    def __init__(self, desc: str, unit: str, total: int | None, stream: TextIO):
        # tqdm: loaded only when a progress bar is drawn in a terminal
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, desc=desc, file=stream, dynamic_ncols=True)
        self.stream = stream

    def update(self, n: int = 1, rejected: int | None = None) -> None:
        if rejected:
            self.bar.set_postfix(rejected=f"{rejected:,}", refresh=False)
        self.bar.update(n)

    def set_postfix(self, **fields: Any) -> None:
        self.bar.set_postfix(**fields)

    def write(self, message: str) -> None:
        self.bar.write(message, file=self.stream)

    def refresh(self) -> None:
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "_TerminalProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def format_seconds(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3725`` → ``1h02m05s``; under a minute → ``42s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ResumedProgress:
    """Progress of a resumable run that reports (done, total) points: the bar opens at the first report and counts
    only what this run does (points done by an earlier run are not its progress). Call it; ``close()`` at the end."""

    def __init__(self, desc: str, unit: str, quiet: bool = False, interval: float = DEFAULT_INTERVAL):
        self.desc, self.unit, self.quiet, self.interval = desc, unit, quiet, interval
        self.bar = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.shown = done
            self.bar = open_progress(self.desc, self.unit, max(total - done, 0), quiet=self.quiet,
                                     interval=self.interval)
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

