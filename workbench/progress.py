"""Progress that reads well on a terminal and in a log file.

On a terminal a tqdm bar redraws in place. Anywhere else (nohup, a CI log, `> train.log`, a notebook)
a bar is one long line of carriage returns, or nothing at all (tqdm's `disable=None`), so `Progress`
writes a plain line instead whenever another tenth of the work is done or 30 s have passed, and at the
end: done / total, the caller's figures (losses), items per second and the time left.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm


def duration(seconds: float) -> str:
    """61 -> '1m01s', 3700 -> '1h01m', 5 -> '5s'."""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Progress of `total` steps called `desc`.

    Args:
        total: steps in this bar (may change: `set_total`).
        initial: steps already done (a resumed epoch).
        enabled: False prints nothing.
        unit: what a step is ("step", "batch").
        items: what `update(items=...)` counts, per second in the lines ("images").
        later: steps that follow this bar in the same job (later epochs), counted in the time left.
        stream: where to write (default: stderr, as tqdm); a bar when it is a terminal, lines otherwise.
        every_s, every_fraction: a line at least this often (log mode).
        quiet_s: no line before this many seconds (log mode): a short pass prints nothing.
        clock: seconds (time.monotonic; tests pass a fake one).
    """

    def __init__(self, total: int, desc: str, initial: int = 0, enabled: bool = True, unit: str = "step",
                 items: str = "images", later: int = 0, stream: TextIO | None = None, every_s: float = 30.0,
                 every_fraction: float = 0.1, quiet_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.done, self.enabled = total, desc, initial, enabled
        self.unit, self.items_name, self.later = unit, items, later
        self.units = unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")
        self.stream = stream if stream is not None else sys.stderr
        self.every_s, self.every_fraction, self.quiet_s, self.clock = every_s, every_fraction, quiet_s, clock
        self.start_done, self.items, self.t0 = initial, 0, clock()
        self.last_t, self.last_done = self.t0, initial
        self.postfix: dict[str, str] = {}
        isatty = getattr(self.stream, "isatty", None)
        self.bar = (tqdm(total=total, initial=initial, desc=desc, leave=False, file=self.stream, unit=unit)
                    if enabled and isatty is not None and isatty() else None)

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total

    def update(self, n: int = 1, items: int = 0, **postfix) -> None:
        """`n` more steps done, `items` more items (images) processed; `postfix` figures shown beside."""
        self.done += n
        self.items += items
        self.postfix = {k: v if isinstance(v, str) else f"{v:.3f}" for k, v in postfix.items() if v is not None}
        if self.bar is not None:
            self.bar.update(n)
            if self.postfix:
                self.bar.set_postfix(self.postfix)
            return
        if not self.enabled:
            return
        now = self.clock()
        if now - self.t0 >= self.quiet_s and (self.done >= self.total or now - self.last_t >= self.every_s
                or self.done - self.last_done >= self.every_fraction * max(1, self.total)):
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()
            self.last_t, self.last_done = now, self.done

    def line(self, now: float | None = None) -> str:
        """'epoch 2/4: 145/290 steps (50%), loss_cls 0.412, 24.1 images/s, 4m10s left'."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.t0, 1e-9)
        steps = self.done - self.start_done
        parts = [f"{self.desc}: {self.done}/{self.total} {self.units} ({100 * self.done / max(1, self.total):.0f}%)"]
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        if self.items:
            parts.append(f"{self.items / elapsed:.1f} {self.items_name}/s")
        if steps > 0:
            left = (max(0, self.total - self.done) + self.later) * elapsed / steps
            parts.append(f"{duration(left)} left")
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
