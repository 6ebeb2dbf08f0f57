"""VAE training speed: images/s of one training step (encoder, decoder, objective, Adam) in fp32 and bf16.

Examples:

    # the official 64x64 beta-VAE at batch 64 on dSprites images, fp32 vs bf16, 1 and 2 threads
    python benchmarks/vae_train.py

    # every objective, only bf16, two threads
    python benchmarks/vae_train.py --cfgs=betavae,btcvae,factorvae --precisions=bf16 --threads=2

The step is exactly the one of training/vae_loop.py (the same objective classes and autocast
regions) on a fixed batch of real dSprites images, so data loading is excluded; the loop adds
the tick maintenance on top. Repeats are reported as the median and the range, because on a
shared machine single measurements vary a lot.
"""

import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnnlib.progress import Progress
from networks.vae import Decoder, Encoder
from torch_utils.precision import autocast_dtype, cpu_bf16_flags
from training import vae_objectives
from training.dataset import open_dataset
from training.loss import autocast_context
from training.vae_objectives.base import reparameterize


def make_step(cfg, resolution=64, channels=1, code_dim=10, precision='fp32', device='cpu'):
    """A closure running one VAE training step (as training/vae_loop.py does) on the batch it is given."""
    E = Encoder(img_resolution=resolution, img_channels=channels, code_dim=code_dim).to(device)
    Dec = Decoder(img_resolution=resolution, img_channels=channels, code_dim=code_dim).to(device)
    objective = vae_objectives.get(cfg)(code_dim=code_dim, dataset_size=737280, device=device,
                                        recon='bernoulli' if channels == 1 else 'gaussian')
    opt = torch.optim.Adam(list(E.parameters()) + list(Dec.parameters()), lr=1e-4)
    amp = autocast_dtype(precision)

    def step(x):
        with autocast_context(x.device, amp):
            mu, logvar = E(x)
        code = reparameterize(mu, logvar)
        with autocast_context(x.device, amp):
            logits = Dec(code)
        loss, _stats = objective.loss(x, logits, mu, logvar, code)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
        objective.after_vae_step(code.detach())
        return float(loss.detach().mean())
    return step


def measure(cfg, precision, threads, batch, steps, repeats, images):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step = make_step(cfg, precision=precision)
    step(images)  # warm-up: allocator and oneDNN kernel selection
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step(images)
        rates.append(steps * batch / (time.perf_counter() - start))
    return dict(cfg=cfg, precision=precision, threads=threads, median=statistics.median(rates),
                low=min(rates), high=max(rates))


@click.command()
@click.option('--cfgs', default='betavae', help='Objectives, comma-separated', show_default=True)
@click.option('--precisions', default='fp32,bf16', help='fp32 and/or bf16, comma-separated', show_default=True)
@click.option('--threads', default='1,2', help='torch intra-op thread counts, comma-separated', show_default=True)
@click.option('--batch', default=64, type=click.IntRange(min=2), show_default=True)
@click.option('--steps', default=10, type=click.IntRange(min=1), help='Steps per repeat', show_default=True)
@click.option('--repeats', default=3, type=click.IntRange(min=1), show_default=True)
def main(cfgs, precisions, threads, batch, steps, repeats):
    """Print images/s of VAE training steps for each objective x precision x thread count."""
    dataset = open_dataset('dsprites')
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:batch].tolist()
    images = torch.stack([torch.from_numpy(dataset[i][0]) for i in indices]).float() / 127.5 - 1
    combos = [(c, p, int(t)) for c in cfgs.split(',') for p in precisions.split(',') for t in threads.split(',')]
    print(f'CPU bf16 flags: {", ".join(cpu_bf16_flags()) or "none"}; load average {os.getloadavg()[0]:.1f}; '
          f'batch {batch}, 64x64x1, code_dim 10')
    results = []
    with Progress(len(combos), desc='measuring', unit='configs') as progress:
        for cfg, precision, num_threads in combos:
            results.append(measure(cfg, precision, num_threads, batch, steps, repeats, images))
            progress.update()
    print(f'{"cfg":<10} {"precision":<9} {"threads":>7} {"images/s (median)":>18} {"range":>16}')
    for r in results:
        print(f'{r["cfg"]:<10} {r["precision"]:<9} {r["threads"]:>7} {r["median"]:>18.0f} '
              f'{r["low"]:>7.0f} - {r["high"]:<7.0f}')
    print(f'load average after: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()
