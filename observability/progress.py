"""Progress for long management commands: a bar redrawn in place on a terminal, a line per 10%
otherwise (logs, CI, `| tee`), so a log keeps about ten lines however long the job is."""

from __future__ import annotations

import time

from tqdm import tqdm


def real_stream(out):
    """The stream under Django's OutputWrapper, which appends a newline to every write (so a
    bar's carriage-return redraws would each land on a new line)."""
    return getattr(out, "_out", out)


class Progress:
    """`update(done)` with the running total; `close()` at the end (or use it as a context manager)."""

    def __init__(self, *, total: int, out, unit: str = "events", tty: bool | None = None):
        stream = real_stream(out)
        self.total, self.unit, self.stream = total, unit, stream
        self.tty = (hasattr(stream, "isatty") and stream.isatty()) if tty is None else tty
        self.started = time.monotonic()
        self.last_decile = 0
        self.bar = None
        if self.tty:
            self.bar = tqdm(total=total, file=stream, unit=f" {unit}", unit_scale=True, dynamic_ncols=True,
                            leave=True)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        fraction = done / self.total if self.total else 1.0
        decile = int(fraction * 10 + 1e-9)
        if decile > self.last_decile:
            self.last_decile = decile
            elapsed = time.monotonic() - self.started
            rate = done / elapsed if elapsed else 0.0
            eta = (self.total - done) / rate if rate else 0.0
            self.stream.write(f"{fraction:6.1%}  {done:,}/{self.total:,} {self.unit}  {rate:,.0f}/s  "
                              f"ETA {eta:,.0f}s\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
