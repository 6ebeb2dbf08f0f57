"""Progress lines with an estimate of the time left, for dataset building, metrics and generation."""

import sys
import time


def format_time(seconds):
    """Human-readable duration in the StyleGAN2-ADA style: '45s', '3m 07s', '2h 05m', '1d 03h'."""
    s = int(round(max(float(seconds), 0.0)))
    if s < 60:
        return f'{s}s'
    if s < 60 * 60:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 24 * 60 * 60:
        return f'{s // 3600}h {(s // 60) % 60:02d}m'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h'


class Progress:
    """Prints `desc: done/total (pct) rate/s, ETA ...` at most every `interval` seconds.

    Writes to stderr so that stdout stays clean for results. Use as a context manager or call
    close(); the final line is always printed so logs show the total time.
    """

    def __init__(self, total, desc='progress', unit='it', interval=1.0, stream=None, enabled=True):
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.interval = float(interval)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.start = time.time()
        self._last_print = self.start
        self._printed_done = -1
        self._closed = False

    def line(self, now=None):
        now = time.time() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / max(self.total, 1)
        if self.done >= self.total:
            tail = f'done in {format_time(elapsed)}'
        elif self.done > 0:
            tail = f'ETA {format_time((self.total - self.done) / rate)}'
        else:
            tail = 'ETA ?'
        return f'{self.desc}: {self.done}/{self.total} ({pct:.1f}%) {rate:.1f} {self.unit}/s, {tail}'

    def update(self, n=1):
        self.done += int(n)
        now = time.time()
        if self.enabled and now - self._last_print >= self.interval:
            self._last_print = now
            self._printed_done = self.done
            print(self.line(now), file=self.stream, flush=True)

    def close(self):
        if not self._closed and self.enabled and self._printed_done != self.done:
            print(self.line(), file=self.stream, flush=True)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        return False
