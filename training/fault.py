"""Fault tolerance: finding a complete snapshot to continue from, and stopping cleanly on a signal.

- A snapshot is *complete* when its bytes form a whole pickle stream (every opcode well formed,
  ending in STOP). The check walks the opcodes with `pickletools` and executes nothing, so it is
  safe on any file and cheap next to loading: a file cut short by a crash, a full disk or a copy
  that stopped half-way fails it. Snapshots are written atomically (temp file + rename), so a
  truncated `network-snapshot-*.pkl` only appears when something outside the training code cut it.
  Our snapshots also end with a SHA-256 of the pickle bytes (after STOP, where unpicklers never
  read); a snapshot whose bytes changed after it was written (a flipped bit on disk or in a copy)
  fails the check too. Pickles without that trailer (official ones, older ones) pass unverified.
- `--resume=auto` continues the newest run directory of `--outdir` whose name carries the same
  description (`NNNNN-<data>-<cfg>-...-batch<N>`) and holds a complete snapshot; without one it
  starts a new run, so a job script can always pass `--resume=auto`.
- `StopRequest` turns SIGTERM/SIGINT into a flag that the training loop polls between steps; the
  loop then writes a final snapshot and returns. Under torch.distributed the ranks agree on the
  flag only every `ABORT_AGREEMENT_STEPS` steps and at tick boundaries (`poll_abort`), so they
  stop at the same step without a host sync on every step.
"""

import hashlib
import os
import pickletools
import re
import signal
import sys
import warnings

import torch

from torch_utils import misc

SNAPSHOT_PREFIX = 'network-snapshot-'


class IncompleteSnapshotWarning(UserWarning):
    """A snapshot in a run directory is truncated or corrupt and was skipped."""


# What pickle_problem says about a file whose bytes no longer hash to the checksum written after them.
CHECKSUM_MISMATCH = 'its checksum does not match the one written with it, so the file was changed after it was written'


def pickle_problem(data, verify=None):
    """None if `data` (bytes) is one whole pickle stream, else a short description of what is wrong.

    After the stream (which ends with STOP) only our checksum trailer may follow; its digest is
    checked unless `verify` is False (None: unless SG2D_SKIP_CHECKSUM is set), and a mismatch is
    described as CHECKSUM_MISMATCH. A pickle without a trailer (written elsewhere) passes unverified.
    """
    if len(data) == 0:
        return 'the file is empty'
    try:
        last = None
        for opcode, _arg, pos in pickletools.genops(data):
            last = opcode, pos
    except (ValueError, EOFError) as err:  # genops' way of saying "cut short" or "not a pickle"
        text = str(err)
        if any(word in text for word in ('not enough data', 'but only', 'exhausted', 'no newline')):
            return f'its {len(data)} bytes end before the pickle does'
        return f'it is not a pickle: {text}'
    if last is None or last[0].name != 'STOP':
        return 'the pickle stream has no end'
    return _trailer_problem(data, last[1] + 1, verify)


def _trailer_problem(data, end, verify):
    """Check what follows the pickle's STOP at `end`: nothing (a pickle from elsewhere, unverified) or
    exactly the checksum trailer of torch_utils/misc.py, whose digest must match unless `verify` is
    False (None: unless SG2D_SKIP_CHECKSUM is set)."""
    rest = data[end:]
    tag, size = misc.CHECKSUM_TAG, misc.CHECKSUM_TRAILER_SIZE
    if len(rest) == 0:
        return None
    if len(rest) == size and rest.startswith(tag) and rest.endswith(b'\n'):
        if verify is None:
            verify = not misc.checksum_skipped()
        if verify and hashlib.sha256(memoryview(data)[:end]).hexdigest().encode('ascii') != rest[len(tag):-1]:
            return CHECKSUM_MISMATCH
        return None
    if len(rest) < size and (tag.startswith(rest) or rest.startswith(tag)):
        return f'its {len(data)} bytes end inside the checksum that follows the pickle'
    return f'{len(rest)} stray bytes follow the end of the pickle'


def snapshot_problem(path):
    """None if the file at `path` is a complete pickle whose checksum (if it has one) matches, else why
    not (never unpickles)."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        return f'it cannot be read ({err.strerror or err})'
    return pickle_problem(data)


def newest_complete_snapshot(run_dir, prefix=SNAPSHOT_PREFIX):
    """The newest complete `<prefix>*.pkl` of `run_dir` (None if there is none).

    Newer files that fail the check are skipped with an IncompleteSnapshotWarning naming them.
    """
    names = sorted(f for f in os.listdir(run_dir) if f.startswith(prefix) and f.endswith('.pkl')) \
        if os.path.isdir(run_dir) else []
    for name in reversed(names):
        path = os.path.join(run_dir, name)
        problem = snapshot_problem(path)
        if problem is None:
            return path
        warnings.warn(f'skipping {path}: it is truncated or corrupt ({problem}).', IncompleteSnapshotWarning,
                      stacklevel=2)
    return None


def find_run_to_continue(outdir, desc, prefix=SNAPSHOT_PREFIX):
    """(snapshot, run_dir) for `--resume=auto`: the newest run `NNNNN-<desc>` in `outdir` with a
    complete snapshot, or (None, None) when there is none (the caller starts a new run)."""
    if not os.path.isdir(outdir):
        return None, None
    runs = []
    for name in os.listdir(outdir):
        m = re.fullmatch(r'(\d+)-(.+)', name)
        if m and m.group(2) == desc and os.path.isdir(os.path.join(outdir, name)):
            runs.append((int(m.group(1)), name))
    for _run_id, name in sorted(runs, reverse=True):
        run_dir = os.path.join(outdir, name)
        snapshot = newest_complete_snapshot(run_dir, prefix=prefix)
        if snapshot is not None:
            return snapshot, run_dir
    return None, None


def snapshot_path(run_dir, prefix, cur_nimg, ext='.pkl'):
    """Where to write the snapshot (or image grid) of `cur_nimg` images without replacing another.

    StyleGAN2-ADA's name, `<prefix><kimg:06d><ext>`, when it is free. Several snapshots within one
    kimg (short ticks, a signal right after a periodic snapshot, a resume with another batch) would
    share that name, so a later one is `<prefix><kimg:06d>_<images:03d><ext>` (`_512`: 512 images
    past the kimg), which sorts after the plain name and before the next kimg's, so "newest by name"
    stays right. A complete snapshot is never replaced; an incomplete file of the same name is.
    """
    kimg, rest = divmod(int(cur_nimg), 1000)
    plain = os.path.join(run_dir, f'{prefix}{kimg:06d}{ext}')
    if not os.path.exists(plain):
        return plain
    stem = os.path.join(run_dir, f'{prefix}{kimg:06d}_{rest:03d}')
    candidate, copy = stem + ext, 1
    while os.path.exists(candidate) and (ext != '.pkl' or snapshot_problem(candidate) is None):
        copy += 1
        candidate = f'{stem}_{copy}{ext}'
    return candidate


# ----------------------------------------------------------------------------------------------
# Stopping on a signal.

# Under torch.distributed the ranks exchange their stop flags only every this many steps (and at
# tick boundaries, which synchronise anyway): an exchange is an all-reduce whose result the host
# must read, which would otherwise stall the device queue on every step. The price is latency: a
# signal stops a multi-process run up to this many steps (or one tick, if sooner) after it arrived.
ABORT_AGREEMENT_STEPS = 8


class StopRequest:
    """Callable flag for `training_loop(abort_fn=...)`, raised by SIGTERM or SIGINT.

    The first signal asks for a final snapshot at the next step boundary (with several processes,
    the next agreement point of `poll_abort`). With `escalate` (a lone process) a second signal
    restores the previous handler and re-delivers the signal: stop now (snapshots are atomic, so
    nothing written is damaged). Ranks of a multi-process run do not escalate, since a launcher
    may pass on a signal they already got from the terminal; the launcher kills them on a second
    signal instead.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, escalate=True):
        self.signum = None
        self.escalate = bool(escalate)
        self._previous = {}

    def install(self):
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, _frame):
        if self.signum is not None:
            if not self.escalate:
                return
            self.restore()
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        when = 'after this step' if self.escalate else \
            f'once the ranks agree (within {ABORT_AGREEMENT_STEPS} steps)'
        print(f'\nReceived {signal.Signals(signum).name}: writing a final snapshot {when} '
              f'(send it again to stop at once).', file=sys.stderr, flush=True)

    def __call__(self):
        return self.signum is not None

    @property
    def exit_code(self):
        """The shell's convention for "ended by signal N": 128 + N (143 for SIGTERM, 130 for SIGINT)."""
        return 128 + int(self.signum)


def poll_abort(abort_fn, num_gpus, device, batch_idx=0, at_tick=True):
    """Whether to stop now: abort_fn(), agreed by all ranks (any rank asking stops them all).

    A single process reads abort_fn() on every call. Several processes exchange their flags (one
    all-reduce) only when `at_tick` is true or `batch_idx` is a multiple of ABORT_AGREEMENT_STEPS,
    and return False in between without calling abort_fn; both conditions are the same on every
    rank, so every rank joins the same exchanges and all stop at the same step, which keeps the
    final snapshot consistent. The flag itself is set at once by the signal handler.
    """
    if abort_fn is None:
        return False
    if num_gpus <= 1:
        return bool(abort_fn())
    if not at_tick and batch_idx % ABORT_AGREEMENT_STEPS != 0:
        return False
    flag = torch.tensor([float(bool(abort_fn()))], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item() > 0)  # the one host sync, at an agreement point only
