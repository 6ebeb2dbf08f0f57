"""Training images/s with 1 and more data-parallel processes (gloo on CPU, NCCL on CUDA).

Each process count trains the same StyleGAN2 (same global batch) through the real launcher
(training/distributed.py, as `train.py --gpus=N`) for a few ticks; images/s is the mean of
1000 / sec_per_kimg over the ticks after the first (the first holds start-up and warm-up).
On CPU, one process uses all cores (or --threads) and N processes use cores / N threads each.

    python benchmarks/ddp.py --gpus=1,2 --data=dsprites --cbase=2048 --cmax=32 --batch=8 --kimg=0.4 --tick=0.08
"""

import json
import os
import sys
import tempfile
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
from training import launch  # noqa: E402
from training.dataset import dataset_kwargs  # noqa: E402


def config(run_dir, num_gpus, data, cbase, cmax, batch, kimg, tick, device):
    return dnnlib.EasyDict(
        run_dir=run_dir, num_gpus=num_gpus,
        training_set_kwargs=dataset_kwargs(data, use_labels=False, xflip=False, max_size=None),
        data_loader_kwargs=dnnlib.EasyDict(num_workers=0),
        G_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Generator', z_dim=512, w_dim=512,
                                 mapping_kwargs=dnnlib.EasyDict(num_layers=2),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=cbase, channel_max=cmax)),
        D_kwargs=dnnlib.EasyDict(class_name='networks.stylegan2.Discriminator', channel_base=cbase, channel_max=cmax,
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=min(4, batch // num_gpus))),
        G_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        D_opt_kwargs=dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8),
        loss_kwargs=dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=0.0002 * 64 ** 2 / batch),
        batch_size=batch, batch_gpu=batch // num_gpus, ema_kimg=batch * 10 / 32,
        total_kimg=kimg, kimg_per_tick=tick, image_snapshot_ticks=10000, network_snapshot_ticks=10000,
        random_seed=0, precision='fp32', device=device)


@click.command()
@click.option('--gpus', 'gpu_counts', default='1,2', help='Process counts to compare, comma-separated')
@click.option('--data', default='dsprites', help='Dataset (built-in name, folder or zip)')
@click.option('--cbase', type=int, default=2048)
@click.option('--cmax', type=int, default=32)
@click.option('--batch', type=int, default=8, help='Global batch (same for every process count)')
@click.option('--kimg', type=float, default=0.4)
@click.option('--tick', type=float, default=0.08)
@click.option('--device', default='cpu')
@click.option('--threads', type=int, help='CPU threads of a single process [default: all cores]')
def main(gpu_counts, data, cbase, cmax, batch, kimg, tick, device, threads):
    """Print images/s per process count and the speed-up over the first."""
    results = []
    for num_gpus in [int(n) for n in gpu_counts.split(',')]:
        if num_gpus == 1 and device == 'cpu':
            torch.set_num_threads(threads or os.cpu_count() or 1)
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.time()
            launch.launch_training(config(run_dir, num_gpus, data, cbase, cmax, batch, kimg, tick, device))
            wall = time.time() - start
            with open(os.path.join(run_dir, 'stats.jsonl')) as f:
                ticks = [json.loads(line) for line in f]
        rates = [1000 / t['Timing/sec_per_kimg']['mean'] for t in ticks[1:]]
        results.append((num_gpus, sum(rates) / len(rates), len(rates), wall))
    print()
    print(f'data={data} cbase={cbase} cmax={cmax} batch={batch} device={device} cpus={os.cpu_count()}')
    print(f'load average {os.getloadavg()[0]:.2f} at the end')
    print('processes  images/s  ticks  wall s  speed-up')
    for num_gpus, rate, count, wall in results:
        print(f'{num_gpus:9d}  {rate:8.1f}  {count:5d}  {wall:6.1f}  {rate / results[0][1]:7.2f}x')


if __name__ == '__main__':
    main()
