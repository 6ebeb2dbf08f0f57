"""Starting the training processes: one process, `--gpus=N` spawning, or processes made by torchrun.

Data-parallel training follows StyleGAN2-ADA: every rank holds all networks, starts from rank 0's
weights, trains on its own slice of each global batch and averages gradients with one all-reduce
per phase; rank 0 writes logs and snapshots. NCCL on CUDA, gloo on CPU.

- `--gpus=N` (N > 1): train.py spawns N processes on this machine that meet through a file in a
  temporary directory. SIGTERM/SIGINT to the parent are passed on to the ranks, which stop together
  after a final snapshot; a second signal kills them.
- `torchrun --nproc_per_node=N [--nnodes=M --node_rank=K --rdzv_endpoint=HOST:PORT] train.py ...`:
  torchrun's RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR variables are detected and the process
  group is formed from them (`env://`); every process runs train.py, and only rank 0 creates the run
  directory and prints (see `init_torchrun`).
"""

import os
import signal
import sys
import tempfile

import torch

import dnnlib
from torch_utils import training_stats
from training import fault

TORCHRUN_VARS = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')


def torchrun_env():
    """EasyDict(rank, local_rank, world_size) when started by torchrun, else None."""
    if not all(name in os.environ for name in TORCHRUN_VARS):
        return None
    return dnnlib.EasyDict(rank=int(os.environ['RANK']), local_rank=int(os.environ['LOCAL_RANK']),
                           world_size=int(os.environ['WORLD_SIZE']))


def backend_for(device):
    return 'nccl' if torch.device(device).type == 'cuda' else 'gloo'


def init_torchrun(device):
    """Join torchrun's process group (once) and silence stdout on ranks other than 0. Returns the env."""
    env = torchrun_env()
    if env is None:
        return None
    if not torch.distributed.is_initialized():
        if torch.device(device).type == 'cuda':
            torch.cuda.set_device(env.local_rank)
        torch.distributed.init_process_group(backend=backend_for(device), init_method='env://')
    if env.rank != 0:
        sys.stdout = open(os.devnull, 'w')  # one set of tick lines per job, from rank 0
    return env


def agree_on(value, env):
    """Rank 0's `value` on every rank (e.g. the run directory rank 0 just created)."""
    if env is None or env.world_size == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def agree_on_object(value, num_gpus):
    """Rank 0's `value` on every rank of the training loop's process group (no-op for one process)."""
    if num_gpus <= 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, num_gpus):
    """[obj of rank 0, obj of rank 1, ...] on every rank (None for a single process)."""
    if num_gpus <= 1:
        return None
    out = [None] * num_gpus
    torch.distributed.all_gather_object(out, obj)
    return out


# Buffers that training never changes, by the last part of their name: equal on every rank after
# the initial broadcast from rank 0, so averaging them would only cost bandwidth (`noise_const` alone
# is resolution x resolution per synthesis layer). Frozen layers (Freeze-D, `trainable=False`) keep
# their `weight` and `bias` as buffers. Every buffer not named here is averaged, so a new running
# statistic is averaged by default; tests/test_distributed.py checks that the ones named here stay
# unchanged through a training step.
CONSTANT_BUFFERS = frozenset(['noise_const', 'resample_filter', 'upsample_filter', 'downsample_filter',
                              'band_filters', 'weight', 'bias'])


def buffers_to_average(modules):
    """[(name, buffer)] of the floating-point buffers of `modules` that training changes.

    `modules` is a dict {name: module} (names come out as 'G.mapping.w_avg') or a list (names
    start with the module's index); None entries are skipped.
    """
    items = modules.items() if isinstance(modules, dict) else enumerate(modules)
    out = []
    for prefix, module in items:
        if module is None:
            continue
        for name, buffer in module.named_buffers():
            if buffer.is_floating_point() and buffer.numel() > 0 and name.rsplit('.', 1)[-1] not in CONSTANT_BUFFERS:
                out.append((f'{prefix}.{name}', buffer))
    return out


def average_buffers(modules, num_gpus):
    """Average the buffers that training changes over the ranks, in place; returns their names.

    Running statistics updated from each rank's slice of the batch (G's w_avg, a plug-in's
    normalisation statistics) are linear moving averages, so averaging them after every step gives
    what one process computes from the whole batch. The training loop calls this every step, so it
    is one all-reduce of one flat tensor and never reads a value on the host. Constants
    (CONSTANT_BUFFERS) are left out.
    """
    if num_gpus <= 1:
        return []
    named = buffers_to_average(modules)
    if not named:
        return []
    buffers = [b for _name, b in named]
    flat = torch.cat([b.detach().flatten().to(torch.float32) for b in buffers])
    torch.distributed.all_reduce(flat)
    flat /= num_gpus
    offset = 0
    with torch.no_grad():
        for b in buffers:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()
    return [name for name, _b in named]


def rank_rng_state(resume_state, rank, num_gpus):
    """The RNG state this rank had at the snapshot: its own when the process count is unchanged,
    else rank 0's (continuing with a different process count cannot be exact anyway)."""
    per_rank = resume_state.get('rank_rng')
    if per_rank is not None and len(per_rank) == num_gpus:
        return per_rank[rank]
    return resume_state['rng']


# ----------------------------------------------------------------------------------------------

def _subprocess_fn(rank, c, temp_dir, escalate=False):
    log_file = os.path.join(c.run_dir, 'log.txt') if rank == 0 else None
    with dnnlib.util.Logger(file_name=log_file, file_mode='a', should_flush=True):
        return train_in_process(rank, c, temp_dir, escalate=escalate)


def train_in_process(rank, c, temp_dir, escalate=False):
    """Run the training loop as `rank`; returns the StopRequest (its signum is set if a signal stopped it)."""
    device = torch.device(c.device)
    env = torchrun_env()
    owns_group = c.num_gpus > 1 and not torch.distributed.is_initialized()
    if owns_group:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        torch.distributed.init_process_group(backend=backend_for(device), init_method=f'file://{init_file}',
                                             rank=rank, world_size=c.num_gpus)
    if c.num_gpus > 1 and device.type == 'cpu':
        per_node = c.num_gpus if env is None else int(os.environ.get('LOCAL_WORLD_SIZE', c.num_gpus))
        torch.set_num_threads(max((os.cpu_count() or 1) // max(per_node, 1), 1))
    if device.type == 'cuda':
        device = torch.device('cuda', env.local_rank if env is not None else rank)
        torch.cuda.set_device(device)
    if c.num_gpus > 1:  # a single process needs no set-up (and may already hold statistics)
        training_stats.init_multiprocessing(rank=rank, sync_device=device if device.type == 'cuda' else torch.device('cpu'))
    from training import training_loop
    stop = fault.StopRequest(escalate=escalate).install()
    try:
        kwargs = dict(c)
        kwargs.update(rank=rank, device=device, abort_fn=stop)
        training_loop.training_loop(**kwargs)
    finally:
        stop.restore()
    if owns_group:  # an undestroyed gloo group can abort the process at interpreter exit
        torch.distributed.destroy_process_group()
    return stop


def launch_training(c):
    """Train with c.num_gpus processes (spawned here unless torchrun made them).

    Returns the signal number that stopped training early (after its final snapshot), or None.
    """
    env = torchrun_env()
    with tempfile.TemporaryDirectory() as temp_dir:
        if env is not None:
            return _subprocess_fn(env.rank, c, temp_dir).signum
        if c.num_gpus == 1:
            return _subprocess_fn(0, c, temp_dir, escalate=True).signum
        return _spawn_and_wait(c, temp_dir)


def _spawn_and_wait(c, temp_dir):
    context = torch.multiprocessing.start_processes(_subprocess_fn, args=(c, temp_dir), nprocs=c.num_gpus,
                                                    join=False, start_method='spawn')
    received = []

    def forward(signum, _frame):
        if received:  # a second signal: stop now
            for process in context.processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGKILL)
        received.append(signum)
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    previous = {signum: signal.signal(signum, forward) for signum in fault.StopRequest.SIGNALS}
    try:
        while not context.join(timeout=0.5):
            pass
    except torch.multiprocessing.ProcessExitedException:
        if not received:
            raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return received[0] if received else None
