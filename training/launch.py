"""Starting the training processes (docs/DISTRIBUTED.md): one process, `--gpus=N` spawned here, or
the processes torchrun made. What the ranks do together while training is training/distributed.py.

Kept apart from training/distributed.py so that the training loop, which uses those collectives,
and the launcher, which runs the loop, do not import each other.
"""

import os
import signal
import tempfile

import torch

import dnnlib
from torch_utils import training_stats
from training import distributed, fault, training_loop


def _subprocess_fn(rank, c, temp_dir, escalate=False):
    log_file = os.path.join(c.run_dir, 'log.txt') if rank == 0 else None
    with dnnlib.util.Logger(file_name=log_file, file_mode='a', should_flush=True):
        return train_in_process(rank, c, temp_dir, escalate=escalate)


def train_in_process(rank, c, temp_dir, escalate=False):
    """Run the training loop as `rank`; returns the StopRequest (its signum is set if a signal stopped it)."""
    device = torch.device(c.device)
    env = distributed.torchrun_env()
    owns_group = c.num_gpus > 1 and not torch.distributed.is_initialized()
    if owns_group:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        torch.distributed.init_process_group(backend=distributed.backend_for(device), init_method=f'file://{init_file}',
                                             rank=rank, world_size=c.num_gpus)
    if c.num_gpus > 1 and device.type == 'cpu':
        per_node = c.num_gpus if env is None else int(os.environ.get('LOCAL_WORLD_SIZE', c.num_gpus))
        torch.set_num_threads(max((os.cpu_count() or 1) // max(per_node, 1), 1))
    if device.type == 'cuda':
        device = torch.device('cuda', env.local_rank if env is not None else rank)
        torch.cuda.set_device(device)
    if c.num_gpus > 1:  # a single process needs no set-up (and may already hold statistics)
        training_stats.init_multiprocessing(rank=rank, sync_device=device if device.type == 'cuda' else torch.device('cpu'))
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
    env = distributed.torchrun_env()
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
