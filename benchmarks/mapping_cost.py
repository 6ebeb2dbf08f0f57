"""Cost of the gene-bank mapping (StyleGenes) against StyleGAN2's MLP for the same w_dim.

Prints, per mapping network: parameters, parameter + buffer memory, FLOPs per sample (counted by
torch.utils.flop_counter on a real forward pass, so a hidden matmul cannot hide), the activation
memory a training forward + backward allocates (peak RSS growth is too coarse on CPU; this counts
the tensors autograd keeps), forward time per batch, and the number of distinct latents.

    python benchmarks/mapping_cost.py                                   # w_dim 512: 8-layer MLP vs 16 x 32 genes
    python benchmarks/mapping_cost.py --w-dim=512 --genes=16,32 --variants=32,256 --batch=64
"""

import os
import sys
import time

import click
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from disentangle.stylegenes import GeneLatent, GeneMappingNetwork  # noqa: E402
from networks.stylegan2 import MappingNetwork  # noqa: E402
from training.latent import GaussianLatent  # noqa: E402


def _saved_bytes(fn):
    """Bytes of the tensors autograd saves for backward during fn() (activation memory of training)."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


def measure(name, mapping, sampler, batch, repeats):
    z = sampler.sample(batch, generator=torch.Generator().manual_seed(0)).z
    c = torch.zeros([batch, 0])
    params = sum(p.numel() for p in mapping.parameters())
    memory = sum(t.numel() * t.element_size() for t in list(mapping.parameters()) + list(mapping.buffers()))
    with FlopCounterMode(display=False) as counter:
        mapping(z, c, skip_w_avg_update=True)
    flops = counter.get_total_flops() / batch
    ws, saved = _saved_bytes(lambda: mapping(z, c, skip_w_avg_update=True))
    ws.square().mean().backward()
    with torch.no_grad():
        for _ in range(3):
            mapping(z, c, skip_w_avg_update=True)
        start = time.perf_counter()
        for _ in range(repeats):
            mapping(z, c, skip_w_avg_update=True)
        ms = (time.perf_counter() - start) / repeats * 1000
    distinct = sampler.num_distinct_genomes if hasattr(sampler, 'num_distinct_genomes') else None
    return dict(name=name, params=params, memory=memory, flops=flops, saved=saved / batch, ms=ms,
                distinct=distinct)


@click.command()
@click.option('--w-dim', type=int, default=512, show_default=True)
@click.option('--map', 'num_layers', type=int, default=8, show_default=True, help='MLP depth (StyleGAN2: 8)')
@click.option('--genes', default='16', show_default=True, help='Gene counts, comma-separated')
@click.option('--variants', default='32', show_default=True, help='Variants per gene, comma-separated')
@click.option('--batch', type=int, default=64, show_default=True)
@click.option('--repeats', type=int, default=50, show_default=True)
@click.option('--num-ws', type=int, default=10, show_default=True, help='Broadcast copies of w (10 at 64x64)')
def main(w_dim, num_layers, genes, variants, batch, repeats, num_ws):
    torch.manual_seed(0)
    rows = [measure(f'MLP {num_layers}x{w_dim}', MappingNetwork(z_dim=w_dim, c_dim=0, w_dim=w_dim, num_ws=num_ws,
                                                              num_layers=num_layers),
                    GaussianLatent(w_dim), batch, repeats)]
    for n in [int(x) for x in genes.split(',')]:
        for k in [int(x) for x in variants.split(',')]:
            mapping = GeneMappingNetwork(z_dim=n, c_dim=0, w_dim=w_dim, num_ws=num_ws, num_genes=n, num_variants=k)
            rows.append(measure(f'genes N={n} K={k}', mapping, GeneLatent(n, k), batch, repeats))
    print(f'w_dim={w_dim} num_ws={num_ws} batch={batch} threads={torch.get_num_threads()}')
    print(f'{"mapping":<20} {"params":>10} {"memory":>10} {"FLOPs/sample":>13} {"saved/sample":>13} '
          f'{"fwd ms/batch":>13} {"distinct latents":>18}')
    for r in rows:
        distinct = 'continuous' if r['distinct'] is None else f'{r["distinct"]:.3g}'
        print(f'{r["name"]:<20} {r["params"]:>10,} {r["memory"] / 2**20:>8.2f}MB {r["flops"]:>13,.0f} '
              f'{r["saved"] / 1024:>11.1f}kB {r["ms"]:>13.3f} {distinct:>18}')


if __name__ == '__main__':
    main()
