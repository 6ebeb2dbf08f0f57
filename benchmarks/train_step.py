"""Speed of one StyleGAN2 training step, as a fraction of this machine's measured peak.

For a network width, resolution, batch and precision this prints: training images/s (phases
weighted by the lazy-regularisation schedule: Gmain + Greg/4 + Dmain + Dreg/16 per step),
achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter), the same machine's peak for the
same dtype measured in the same run (the best of a large matmul and a large 3x3 convolution),
generator inference images/s, and peak memory.

    python benchmarks/train_step.py --res=64 --batch=8 --cbase=4096 --cmax=128 --map=2 --precision=fp32
    python benchmarks/train_step.py --res=64 --batch=8 --cbase=4096 --cmax=128 --map=2 --precision=bf16
    python benchmarks/train_step.py --res=64 --batch=8 --precision=fp32,bf16      # both, one run
    python benchmarks/train_step.py --cbase=2048 --cmax=32 --precision=fp32 --cfg=stylegan2,idgan   # ID-GAN overhead
    python benchmarks/train_step.py --cbase=2048 --cmax=32 --precision=fp32 --compile=0,1      # torch.compile
    python benchmarks/train_step.py --device=cuda --res=256 --batch=64 --cbase=16384 --cmax=512 --map=8 \
        --channels=3 --precision=fp32,tf32,fp16                                                     # one GPU

On CUDA the timed regions are bracketed by torch.cuda.synchronize, the peak probe uses an 8192^2
matmul and a 512-channel convolution, and each configuration prints its peak GPU memory.

`--compile=1` times the main phases through torch.compile (train.py --compile=1: G's synthesis
network and D compiled for Gmain and Dmain, regularisation eager) and prints the one-off compile
time of each phase's first call; FLOPs are counted on the eager modules (the same arithmetic).

`--cfg=idgan` times the same G and D with the ID-GAN latent (a 10-dimensional code from a posterior
bank, no nuisance, the code-preserving mapping network), no style mixing, and the distillation
term (a frozen 64x64 VAE encoder on every Gmain batch; its weights are random, which costs the same).
"""

import os
import resource
import sys
import time

import click
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from networks.stylegan2 import Discriminator, Generator  # noqa: E402
from training.latent import GaussianLatent  # noqa: E402
from torch_utils.precision import set_tf32  # noqa: E402
from training.loss import StyleGAN2Loss, autocast_context  # noqa: E402

# The dtype whose matmul/convolution peak each precision is compared with (tf32: fp32 with TF32 on).
PEAK_DTYPES = {'fp32': torch.float32, 'tf32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
PHASE_WEIGHTS = {'Gmain': 1.0, 'Greg': 1 / 4, 'Dmain': 1.0, 'Dreg': 1 / 16}


class CountFlops(TorchDispatchMode):
    """FLOPs of every op torch.utils.flop_counter knows (convolutions, matmuls and their gradients).

    FlopCounterMode itself cannot be used: its module hooks reject torch.autograd.grad on leaf
    inputs, which R1 and the path-length regulariser do.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        counter = flop_registry.get(func._overloadpacket)
        if counter is not None:
            self.total += counter(*args, **kwargs, out_val=out)
        return out


DEVICE = torch.device('cpu')


def _sync():
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize(DEVICE)


def _median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def probe_peak(dtype, repeats=5):
    """GFLOP/s of a large matmul and a large 3x3 convolution in `dtype` (the machine's practical peak).

    The convolution is timed in both memory layouts and the faster one counts: on CPU oneDNN is
    fastest in channels-last, which the networks use, so an NCHW-only probe would understate the
    peak (one loaded core: 52 vs 65 GFLOP/s fp32, 113 vs 151 bf16 for this convolution).
    """
    n = 8192 if DEVICE.type == 'cuda' else 2048          # large enough to saturate a GPU
    batch, width = (64, 512) if DEVICE.type == 'cuda' else (16, 128)
    a = torch.randn(n, n, device=DEVICE).to(dtype)
    b = torch.randn(n, n, device=DEVICE).to(dtype)
    t = _median_time(lambda: a @ b, repeats)
    matmul = 2 * n ** 3 / t / 1e9
    conv = 0.0
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(batch, width, 64, 64, device=DEVICE).to(dtype=dtype, memory_format=memory_format)
        w = torch.randn(width, width, 3, 3, device=DEVICE).to(dtype=dtype, memory_format=memory_format)
        t = _median_time(lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1), repeats)
        conv = max(conv, 2 * batch * width * width * 9 * 64 * 64 / t / 1e9)
    return max(matmul, conv), matmul, conv


def fp16_kwargs(precision):
    """StyleGAN2-ADA's mixed precision (as train.py --precision=fp16): the 4 top resolutions in fp16."""
    return dict(num_fp16_res=4, conv_clamp=256) if precision == 'fp16' else {}


def build(res, channels, cbase, cmax, map_layers, seed=0, precision='fp32'):
    torch.manual_seed(seed)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=channels,
                  mapping_kwargs=dict(num_layers=map_layers),
                  synthesis_kwargs=dict(channel_base=cbase, channel_max=cmax, **fp16_kwargs(precision)))
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=channels, channel_base=cbase,
                      channel_max=cmax, **fp16_kwargs(precision))
    return G.train().requires_grad_(False).to(DEVICE), D.train().requires_grad_(False).to(DEVICE)


def build_idgan(res, channels, cbase, cmax, map_layers, code_dim=10, seed=0, precision='fp32'):
    """G, D, sampler and distillation term of --cfg=idgan (the plug-in is imported only here)."""
    from disentangle.idgan import DistillationTerm
    from disentangle.latents import PosteriorBankLatent
    from networks.vae import Encoder
    torch.manual_seed(seed)
    sampler = PosteriorBankLatent(code_dim=code_dim, nuisance_dim=0, verbose=False)
    sampler.set_bank(torch.randn(1000, code_dim), torch.randn(1000, code_dim) - 3)
    G = Generator(z_dim=sampler.z_dim, c_dim=0, w_dim=512, img_resolution=res, img_channels=channels,
                  mapping_kwargs=dict(num_layers=map_layers, class_name='disentangle.latents.CodeMappingNetwork',
                                      code_dim=code_dim),
                  synthesis_kwargs=dict(channel_base=cbase, channel_max=cmax, **fp16_kwargs(precision)))
    G = G.train().requires_grad_(False).to(DEVICE)
    _G, D = build(res, channels, cbase, cmax, map_layers, seed=seed, precision=precision)
    E = Encoder(img_resolution=min(res, 64), img_channels=channels, code_dim=code_dim)
    sampler = sampler.to(DEVICE)
    term = DistillationTerm(G=G, D=D, latent_sampler=sampler, training_set=None, device=DEVICE, encoder=E)
    return G, D, sampler, [term]


def measure(res, channels, batch, cbase, cmax, map_layers, precision, repeats, cfg='stylegan2', compile=False):
    amp = torch.bfloat16 if precision == 'bf16' else None
    set_tf32(precision == 'tf32')
    if cfg == 'idgan':
        G, D, sampler, terms = build_idgan(res, channels, cbase, cmax, map_layers, precision=precision)
        mixing = 0  # as --cfg=idgan trains
    else:
        G, D = build(res, channels, cbase, cmax, map_layers, precision=precision)
        sampler, terms, mixing = GaussianLatent(z_dim=G.z_dim), [], 0.9
    loss = StyleGAN2Loss(device=DEVICE, G=G, D=D, latent_sampler=sampler, r1_gamma=1.0, amp_dtype=amp,
                         style_mixing_prob=mixing, extra_terms=terms)
    real = torch.rand(batch, channels, res, res, device=DEVICE) * 2 - 1
    c = torch.zeros(batch, 0, device=DEVICE)

    def phase(name):
        module = G if name.startswith('G') else D
        def run():
            module.requires_grad_(True)
            loss.accumulate_gradients(name, real, c, sampler.sample(batch, device=DEVICE), c, gain=1, cur_nimg=0)
            module.requires_grad_(False)
            for p in module.parameters():
                p.grad = None
        return run

    flops = {}
    for name in PHASE_WEIGHTS:
        with CountFlops() as counter:  # eager: compiled kernels bypass the dispatcher
            phase(name)()
        flops[name] = counter.total
    compile_seconds = {}
    if compile and not loss.compile_main_phases():
        return None
    if compile:
        from torch._dynamo.utils import counters
        counters.clear()
    seconds = {}
    for name in PHASE_WEIGHTS:
        if compile:  # the first call traces and compiles (Greg and Dreg stay eager)
            _sync()
            t0 = time.perf_counter()
            phase(name)()
            _sync()
            compile_seconds[name] = time.perf_counter() - t0
        seconds[name] = _median_time(phase(name), repeats)
    step_flops = sum(PHASE_WEIGHTS[n] * flops[n] for n in flops)
    step_seconds = sum(PHASE_WEIGHTS[n] * seconds[n] for n in seconds)

    z = sampler.sample(batch, device=DEVICE).z
    G.eval()

    def infer():
        with torch.no_grad(), autocast_context(DEVICE, amp):
            G(z, c, noise_mode='const')
    infer_seconds = _median_time(infer, repeats)
    return dict(images_per_s=batch / step_seconds, gflops=step_flops / step_seconds / 1e9,
                step_gflop=step_flops / 1e9, infer_images_per_s=batch / infer_seconds,
                phase_ms={n: 1000 * s for n, s in seconds.items()}, compile_s=compile_seconds,
                graphs=counters['stats']['unique_graphs'] if compile else 0,
                graph_breaks=sum(counters['graph_break'].values()) if compile else 0,
                G_params=sum(p.numel() for p in G.parameters()), D_params=sum(p.numel() for p in D.parameters()))


@click.command()
@click.option('--res', default=64, show_default=True, help='Image resolution')
@click.option('--channels', default=1, show_default=True, help='Image channels')
@click.option('--batch', default=8, show_default=True, help='Batch size')
@click.option('--cbase', default=4096, show_default=True, help='Channel base')
@click.option('--cmax', default=128, show_default=True, help='Max channels')
@click.option('--map', 'map_layers', default=2, show_default=True, help='Mapping layers')
@click.option('--precision', default='fp32,bf16', show_default=True,
              help='Comma-separated: fp32, bf16, tf32 (CUDA: fp32 with TF32 on), fp16 (CUDA: fp16 top resolutions)')
@click.option('--device', default=None, help='Torch device [default: cuda if available, else cpu]')
@click.option('--repeats', default=5, show_default=True, help='Timed repeats per phase (median)')
@click.option('--threads', default=0, help='torch threads (0 = torch default)')
@click.option('--cfg', default='stylegan2', show_default=True, help='Comma-separated: stylegan2, idgan')
@click.option('--compile', 'compile_modes', default='0', show_default=True,
              help='Comma-separated: 0 (eager), 1 (torch.compile of the main phases, as train.py --compile=1)')
def main(res, channels, batch, cbase, cmax, map_layers, precision, repeats, threads, cfg, device, compile_modes):
    """Measure training-step speed against the machine's peak (see module docstring)."""
    global DEVICE
    DEVICE = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if threads:
        torch.set_num_threads(threads)
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == 'cuda' else f'{torch.get_num_threads()} threads'
    print(f'torch {torch.__version__}, {DEVICE} ({where}), res {res}, batch {batch}, '
          f'cbase {cbase}, cmax {cmax}, map {map_layers}')
    precisions = [name.strip() for name in precision.split(',')]
    bad = [name for name in precisions if name not in PEAK_DTYPES or (name in ('tf32', 'fp16') and DEVICE.type != 'cuda')]
    if bad:
        raise click.BadParameter(f'precision {bad[0]!r} is not available on {DEVICE}', param_hint='--precision')
    cfgs = [name.strip() for name in cfg.split(',')]
    unknown = [name for name in cfgs if name not in ('stylegan2', 'idgan')]
    if unknown:
        raise click.BadParameter(f'unknown cfg {unknown[0]!r}; choose stylegan2 and/or idgan', param_hint='--cfg')
    modes = [mode.strip() for mode in compile_modes.split(',')]
    if any(mode not in ('0', '1') for mode in modes):
        raise click.BadParameter(f'{compile_modes!r}: give 0, 1 or 0,1', param_hint='--compile')
    modes = [mode == '1' for mode in modes]
    results = {}
    compiled_results = {}
    for prec in precisions:
        set_tf32(prec == 'tf32')
        peak, matmul, conv = probe_peak(PEAK_DTYPES[prec])
        print(f'[{prec}] peak probe {peak:.0f} GFLOP/s (matmul {matmul:.0f}, conv {conv:.0f})')
        for name, compiled in [(name, compiled) for name in cfgs for compiled in modes]:
            if DEVICE.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(DEVICE)
            r = measure(res, channels, batch, cbase, cmax, map_layers, prec, repeats, cfg=name, compile=compiled)
            tag = f'[{prec}]' if cfgs == ['stylegan2'] else f'[{prec} {name}]'
            if modes != [False]:
                tag = tag[:-1] + (' compiled]' if compiled else ' eager]')
            if r is None:
                print(f'{tag} torch.compile is not available here (reason above); skipped')
                continue
            memory = (f'peak GPU memory {torch.cuda.max_memory_allocated(DEVICE) / 2**30:.2f} GiB'
                      if DEVICE.type == 'cuda' else '')
            (compiled_results if compiled else results)[prec, name] = r
            if compiled:
                print(f'{tag} compile time (first call of each phase): ' +
                      ', '.join(f'{n} {t:.1f} s' for n, t in r['compile_s'].items()) +
                      f'; {r["graphs"]} graphs, {r["graph_breaks"]} graph breaks')
            print(f'{tag} train step: {r["images_per_s"]:.1f} images/s, {r["gflops"]:.0f} GFLOP/s '
                  f'({r["step_gflop"]:.2f} GFLOP/step) = {100 * r["gflops"] / peak:.0f}% of peak; '
                  f'phases (ms) ' + ', '.join(f'{n} {t:.0f}' for n, t in r['phase_ms'].items()))
            print(f'{tag} G inference: {r["infer_images_per_s"]:.1f} images/s; '
                  f'G {r["G_params"] / 1e6:.2f} M params, D {r["D_params"] / 1e6:.2f} M params' +
                  (f'; {memory}' if memory else ''), flush=True)
        if (prec, 'stylegan2') in results and (prec, 'idgan') in results:
            base, ours = results[prec, 'stylegan2'], results[prec, 'idgan']
            print(f'[{prec}] ID-GAN overhead: {100 * (base["images_per_s"] / ours["images_per_s"] - 1):+.1f}% step time, '
                  f'{100 * (ours["step_gflop"] / base["step_gflop"] - 1):+.1f}% FLOPs, '
                  f'Gmain {ours["phase_ms"]["Gmain"]:.0f} vs {base["phase_ms"]["Gmain"]:.0f} ms')
    for (prec, name), r in compiled_results.items():
        if (prec, name) in results:
            print(f'[{prec}{"" if cfgs == ["stylegan2"] else " " + name}] compiled / eager training speed: '
                  f'{r["images_per_s"] / results[prec, name]["images_per_s"]:.2f}x')
    for name in cfgs:
        for fast in ('bf16', 'tf32', 'fp16'):
            if ('fp32', name) in results and (fast, name) in results:
                speedup = results[fast, name]['images_per_s'] / results['fp32', name]['images_per_s']
                print(f'{fast} / fp32 training speed{"" if cfgs == ["stylegan2"] else " (" + name + ")"}: '
                      f'{speedup:.2f}x')
    set_tf32(False)
    print(f'peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB')


if __name__ == '__main__':
    main()
