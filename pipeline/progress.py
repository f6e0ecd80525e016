"""Progress on stderr: a redrawn bar in a terminal, one plain line every few seconds in logs.

Under cron, systemd or Kubernetes stderr is a file or a pipe, where a redrawn bar (``\\r``)
turns into one unreadable line; there each report is a whole line instead, and notes such as
"building the vector index" stand on lines of their own.
"""
from __future__ import annotations

import sys
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

    A line is written on the first ``update`` after ``interval`` seconds have passed since
    the last one, and once more by ``close``. ``quiet`` writes nothing at all.
    """

    def __init__(self, desc: str, unit: str, total: int | None = None, *, interval: float = DEFAULT_INTERVAL,
                 stream: TextIO | None = None, quiet: bool = False, clock: Callable[[], float] = time.monotonic):
        self.desc, self.unit, self.total = desc, unit, total
        self.interval, self.stream, self.quiet, self.clock = interval, stream or sys.stderr, quiet, clock
        self.done = 0
        self.rejected: int | None = None
        self.postfix: dict[str, Any] = {}
        self.started = clock()
        self.last_line = self.started
        self.closed = False

    def update(self, n: int = 1, rejected: int | None = None) -> None:
        """Count ``n`` more units done; ``rejected`` is the running total of rejected rows, if known."""
        self.done += n
        if rejected is not None:
            self.rejected = rejected
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._emit(self.line(now))

    def set_postfix(self, **fields: Any) -> None:
        """Extra ``name=value`` fields shown at the end of the next line (e.g. a training loss)."""
        self.postfix = fields

    def write(self, message: str) -> None:
        """A note on a line of its own."""
        self._emit(message)

    def refresh(self) -> None:
        """Nothing to redraw: lines are written as they come."""

    def line(self, now: float | None = None) -> str:
        """The current report as one line (no newline)."""
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.desc}: {self.done:,}" + (f"/{self.total:,}" if self.total is not None else "")
                 + f" {self.unit}" + (f" ({self.done / self.total:.1%})" if self.total else ""),
                 f"{rate:,.1f} {self.unit}/s", f"elapsed {format_seconds(elapsed)}"]
        if self.rejected is not None:
            parts.insert(2, f"{self.rejected:,} rejected")
        if self.total is not None and self.done < self.total and rate > 0:
            parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        parts += [f"{name}={value}" for name, value in self.postfix.items()]
        return ", ".join(parts)

    def close(self) -> None:
        """Write the last line (once)."""
        if not self.closed:
            self.closed = True
            self._emit(self.line())

    def _emit(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _TerminalProgress:
    """tqdm's bar with the same small interface as ``LineProgress``."""

    def __init__(self, desc: str, unit: str, total: int | None, stream: TextIO):
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
