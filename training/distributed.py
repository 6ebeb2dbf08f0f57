"""Data-parallel training: process groups from torchrun, and what the ranks do together.

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
import sys

import torch

import dnnlib

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
