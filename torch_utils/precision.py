"""Choosing the arithmetic precision of training and inference for a device.

`auto` means: bf16 autocast on CPUs with native bf16 matrix instructions (AMX or AVX-512 BF16),
where convolutions and matmuls run several times faster than fp32; on CUDA the StyleGAN2-ADA
scheme (fp16 in the top resolutions with clamped activations, selected by the networks'
`num_fp16_res`); fp32 everywhere else. Master weights and optimiser state always stay fp32.
"""

import functools

import torch

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')


@functools.cache
def cpu_bf16_flags():
    """The bf16-related instruction-set flags of this CPU (empty where /proc/cpuinfo is absent)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
                    return tuple(sorted(flags & {'amx_bf16', 'amx_tile', 'avx512_bf16'}))
    except OSError:
        pass
    return ()


def cpu_has_fast_bf16():
    flags = set(cpu_bf16_flags())
    return 'amx_bf16' in flags or 'avx512_bf16' in flags


def set_tf32(enabled):
    """TF32 for CUDA matmuls and cuDNN convolutions, set explicitly (both flags; harmless elsewhere).

    Off by default, as in StyleGAN2-ADA: fp32 then means a 24-bit mantissa on A100/H100 too, and
    results compare with the CPU within 1e-4. On, matmuls and convolutions round their inputs to
    TF32's 10-bit mantissa (fp32 range, accumulation in fp32): several times faster on Ampere and
    Hopper tensor cores, with relative errors around 1e-3 per op.
    """
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def resolve_precision(precision, device):
    """Map 'auto' to a concrete precision for `device`; check the others make sense there."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f'unknown precision "{precision}"; choose one of {", ".join(PRECISIONS)}')
    if precision != 'auto':
        return precision
    if device.type == 'cuda':
        return 'fp16'
    if device.type == 'cpu' and cpu_has_fast_bf16():
        return 'bf16'
    return 'fp32'


def autocast_dtype(precision):
    """The autocast dtype of a resolved precision, or None for fp32.

    On CUDA, 'fp16' is realised inside the networks (num_fp16_res), not by autocast.
    """
    return {'fp32': None, 'bf16': torch.bfloat16, 'fp16': None}[precision]
