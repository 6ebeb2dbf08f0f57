"""Latent traversals and real-image editing for generate.py (ID-GAN snapshots and plain StyleGAN2 pickles).

A traversal holds one latent fixed (a seed's code and nuisance) and sweeps one dimension at a time
over a range: for ID-GAN the 2% and 98% quantiles of that code dimension under the aggregate
posterior in the snapshot's bank (the values G was trained on); for a Gaussian latent the same
quantiles of N(0, 1), about +-2. Outputs per seed, all written atomically:

    traverse-seed<seed>.png   rows = dimensions, columns = steps, a label column (dimension, range)
    traverse-seed<seed>.gif   one frame per step (there and back), the dimensions side by side
    traverse-seed<seed>.mp4   the same frames, when imageio-ffmpeg is installed

InfoGAN samplers (`set_code`, `traversal_values`; disentangle/infogan_latent.py) are swept per code
column: a categorical group shows one column per category, a continuous code `--steps` values
over its U(-1, 1) range; rows shorter than the longest are padded with black tiles.

Editing: `encode_image` maps a real image file to E's posterior mean; `apply_edits` sets chosen
dimensions; the generator re-renders the code with a seed's nuisance.

Genes networks (`--mapping=genes`, docs/STYLEGENES.md): `parse_genome` / `parse_swaps` /
`apply_gene_edits` set a whole genome or single genes, and `write_gene_traversal` renders one row
per chosen gene with all of its variants in the columns (traverse-genes-seed<seed>.png/.gif).
"""

import importlib.util
import math
import os

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

import dnnlib

DEFAULT_STEPS = 9
DEFAULT_QUANTILES = (0.02, 0.98)
LABEL_WIDTH = 48
MAX_DEFAULT_DIMS = 10          # plain z: the first 10 dimensions unless --dims says otherwise
GIF_FRAME_MS = 120


class TraversalError(ValueError):
    """A traversal or edit request that does not fit the network (one sentence naming the fix)."""


def code_width(sampler):
    """How many leading z dimensions are meaningful to traverse/edit: the code, or all of a plain z."""
    return int(getattr(sampler, 'code_dim', sampler.z_dim))


def default_dims(sampler):
    return list(range(min(code_width(sampler), MAX_DEFAULT_DIMS) if not hasattr(sampler, 'code_dim')
                      else code_width(sampler)))


def check_dims(sampler, dims):
    width = code_width(sampler)
    bad = [d for d in dims if not 0 <= d < width]
    if bad:
        what = 'code dimensions' if hasattr(sampler, 'code_dim') else 'z dimensions'
        raise TraversalError(f'dimension {bad[0]} does not exist: this network has {width} {what} (0-{width - 1}).')
    if not dims:
        raise TraversalError('no dimensions to traverse; pass --dims, e.g. --dims=0-3.')


def value_ranges(sampler, dims, quantiles=DEFAULT_QUANTILES):
    """[len(dims), 2] (low, high) per dimension."""
    if hasattr(sampler, 'code_quantiles'):
        q = sampler.code_quantiles(quantiles).cpu()            # [2, code_dim]
        return torch.stack([q[0, dims], q[1, dims]], dim=1)
    normal = torch.distributions.Normal(0.0, 1.0)
    lo, hi = normal.icdf(torch.tensor(quantiles, dtype=torch.float32))
    return torch.tensor([[float(lo), float(hi)]] * len(dims))


def traversal_latents(base_z, dims, ranges, steps):
    """[len(dims) * steps, z_dim]: row-major (dimension, step), each a copy of base_z [1, z_dim] with
    dimension d set to a value evenly spaced over its range."""
    rows = []
    for d, (lo, hi) in zip(dims, ranges.tolist()):
        z = base_z.repeat(steps, 1)
        z[:, d] = torch.linspace(lo, hi, steps, device=z.device, dtype=z.dtype)
        rows.append(z)
    return torch.cat(rows)


@torch.no_grad()
def render(G, z, c=None, amp_dtype=None, noise_mode='const', truncation_psi=1, batch=16):
    """uint8 [N, C, H, W] images of latents z [N, z_dim]."""
    c = torch.zeros([z.shape[0], G.c_dim], device=z.device) if c is None else c.expand(z.shape[0], -1)
    out = []
    enabled = amp_dtype is not None and amp_dtype != torch.float32
    for zs, cs in zip(z.split(batch), c.split(batch)):
        with torch.autocast(device_type=zs.device.type, dtype=amp_dtype if enabled else None, enabled=enabled):
            img = G(zs, cs, truncation_psi=truncation_psi, noise_mode=noise_mode)
        out.append((img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out)


def _to_pil(array_hwc):
    return PIL.Image.fromarray(array_hwc[:, :, 0], 'L') if array_hwc.shape[2] == 1 else PIL.Image.fromarray(array_hwc, 'RGB')


def grid_image(images, rows, cols, row_labels=None):
    """PIL image of uint8 [rows * cols, C, H, W] tiles, with a LABEL_WIDTH-px label column when labelled."""
    _n, C, H, W = images.shape
    tiles = images.reshape(rows, cols, C, H, W).permute(0, 3, 1, 4, 2).reshape(rows * H, cols * W, C).numpy()
    grid = _to_pil(tiles)
    if row_labels is None:
        return grid
    canvas = PIL.Image.new(grid.mode, (LABEL_WIDTH + grid.width, grid.height), color=0)
    canvas.paste(grid, (LABEL_WIDTH, 0))
    draw = PIL.ImageDraw.Draw(canvas)
    font = PIL.ImageFont.load_default()
    white = 255 if canvas.mode == 'L' else (255, 255, 255)
    for row, label in enumerate(row_labels):
        lines = label.split('\n') if H >= 32 else label.split('\n')[:1]   # small tiles: the name only
        for index, line in enumerate(lines):
            draw.text((2, row * H + 2 + 11 * index), line, fill=white, font=font)
    return canvas


def _save_atomic(image, path, **save_kwargs):
    ext = os.path.splitext(path)[1]
    tmp = f'{path}.tmp{os.getpid()}{ext}'
    image.save(tmp, **save_kwargs)
    os.replace(tmp, path)


def animation_frames(images, num_dims, steps, lengths=None):
    """PIL frames (steps there and back): frame j shows every dimension at step j, side by side.

    `lengths` (per dimension, <= steps) marks padded rows: a row holds its last real value.
    """
    _n, C, H, W = images.shape
    per_dim = images.reshape(num_dims, steps, C, H, W)
    lengths = [steps] * num_dims if lengths is None else list(lengths)
    order = list(range(steps)) + list(range(steps - 2, 0, -1))
    frames = []
    for j in order:
        columns = torch.stack([per_dim[d, min(j, lengths[d] - 1)] for d in range(num_dims)])
        strip = columns.permute(2, 0, 3, 1).reshape(H, num_dims * W, C).numpy()
        frames.append(_to_pil(strip))
    return frames


def ffmpeg_available():
    return importlib.util.find_spec('imageio_ffmpeg') is not None


def write_animation(frames, path_stem, fps=1000 / GIF_FRAME_MS, mp4=None):
    """Write <stem>.gif (always) and <stem>.mp4 (imageio-ffmpeg installed, or mp4=True); returns the paths."""
    paths = [path_stem + '.gif']
    tmp = f'{paths[0]}.tmp{os.getpid()}.gif'
    frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
    os.replace(tmp, paths[0])
    if mp4 if mp4 is not None else ffmpeg_available():
        import imageio.v2 as imageio
        path = path_stem + '.mp4'
        tmp = f'{path}.tmp{os.getpid()}.mp4'
        with imageio.get_writer(tmp, fps=fps, macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(np.asarray(frame.convert('RGB')))
        os.replace(tmp, path)
        paths.append(path)
    return paths


def write_traversal(G, sampler, latent, outdir, name, dims=None, steps=DEFAULT_STEPS, quantiles=DEFAULT_QUANTILES,
                    c=None, amp_dtype=None, noise_mode='const', truncation_psi=1, mp4=None):
    """Render one traversal of `latent` (sampler output, batch 1) and write <name>.png/.gif(/.mp4).

    Returns dnnlib.EasyDict(paths=[...], images=uint8 [len(dims) * steps, C, H, W], ranges=[len(dims), 2]).
    """
    dims = default_dims(sampler) if dims is None else list(dims)
    check_dims(sampler, dims)
    if steps < 2:
        raise TraversalError(f'--steps={steps} is too few; a traversal needs at least 2 steps.')
    if hasattr(sampler, 'set_code'):
        return _write_code_traversal(G, sampler, latent, outdir, name, dims, steps, c=c, amp_dtype=amp_dtype,
                                     noise_mode=noise_mode, truncation_psi=truncation_psi, mp4=mp4)
    ranges = value_ranges(sampler, dims, quantiles)
    z = traversal_latents(latent.z, dims, ranges.to(latent.z.device), steps)
    images = render(G, z, c=c, amp_dtype=amp_dtype, noise_mode=noise_mode, truncation_psi=truncation_psi)
    prefix = 'c' if hasattr(sampler, 'code_dim') else 'z'
    labels = [f'{prefix}{d}\n{lo:+.1f}\n{hi:+.1f}' for d, (lo, hi) in zip(dims, ranges.tolist())]
    os.makedirs(outdir, exist_ok=True)
    png = os.path.join(outdir, name + '.png')
    _save_atomic(grid_image(images, len(dims), steps, labels), png)
    paths = [png] + write_animation(animation_frames(images, len(dims), steps), os.path.join(outdir, name), mp4=mp4)
    return dnnlib.EasyDict(paths=paths, images=images, ranges=ranges)


def _write_code_traversal(G, sampler, latent, outdir, name, dims, steps, mp4=None, **render_kwargs):
    """write_traversal for InfoGAN samplers: per code column its own values (module docstring)."""
    values = [sampler.traversal_values(d, steps) for d in dims]
    lengths = [len(v) for v in values]
    cols = max(lengths)
    z = torch.cat([sampler.set_code(latent.z.repeat(len(v), 1), d, v.to(latent.z.device)) for d, v in zip(dims, values)])
    rendered = render(G, z, **render_kwargs).split(lengths)
    blank = torch.zeros_like(rendered[0][:1])
    images = torch.cat([torch.cat([row] + [blank] * (cols - len(row))) for row in rendered])
    labels = [f'c{d}\ncat\n0-{len(v) - 1}' if sampler.is_categorical(d) else f'c{d}\n{float(v[0]):+.1f}\n{float(v[-1]):+.1f}'
              for d, v in zip(dims, values)]
    os.makedirs(outdir, exist_ok=True)
    png = os.path.join(outdir, name + '.png')
    _save_atomic(grid_image(images, len(dims), cols, labels), png)
    frames = animation_frames(images, len(dims), cols, lengths)
    paths = [png] + write_animation(frames, os.path.join(outdir, name), mp4=mp4)
    ranges = torch.tensor([[float(v[0]), float(v[-1])] for v in values])
    return dnnlib.EasyDict(paths=paths, images=images, ranges=ranges, lengths=lengths)


# ----------------------------------------------------------------------------------------------
# Real images.

def load_image_for_encoder(path, E, device='cpu'):
    """A real image file as [1, C, R, R] in [-1, 1] at the encoder's resolution and channel count."""
    try:
        image = PIL.Image.open(path)
        image.load()
    except (OSError, ValueError) as err:
        raise TraversalError(f'--encode={path} cannot be read as an image ({err}).')
    image = image.convert('L' if E.img_channels == 1 else 'RGB')
    if image.size != (E.img_resolution, E.img_resolution):
        side = min(image.size)   # centre-crop to a square, then area-resize like the training data
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        image = image.resize((E.img_resolution, E.img_resolution), PIL.Image.BOX)
    array = np.asarray(image, dtype=np.float32)
    array = array[:, :, None] if array.ndim == 2 else array
    x = torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1
    return x.to(device)


def parse_edits(items):
    """['3=1.5', '0=-2'] -> {3: 1.5, 0: -2.0}."""
    edits = {}
    for item in items or ():
        for part in str(item).split(','):
            key, sep, value = part.partition('=')
            try:
                if not sep:
                    raise ValueError
                edits[int(key.strip())] = float(value)
            except ValueError:
                raise TraversalError(f'--set {part!r} is not DIM=VALUE (e.g. --set 3=1.5).')
            if not math.isfinite(edits[int(key.strip())]):
                raise TraversalError(f'--set {part!r}: the value must be a finite number (e.g. --set 3=1.5).')
    return edits


def apply_edits(z, sampler, edits):
    """A copy of z [N, z_dim] with code (or z) dimensions set to the given values."""
    if edits and is_genes(sampler) and not hasattr(sampler, 'code_dim'):
        raise TraversalError('--set edits code dimensions, and this genes network has none; use --swap-gene '
                             'GENE=VARIANT.')
    if edits:
        check_dims(sampler, list(edits))
    z = z.clone()
    for dim, value in edits.items():
        if hasattr(sampler, 'set_code'):    # InfoGAN: code column -> one-hot group or continuous entry
            z = sampler.set_code(z, dim, value)
        else:
            z[:, dim] = value
    return z


def encode_latent(E, sampler, image, seed, amp_dtype=None):
    """Sampler output (batch 1) with the image's posterior-mean code and the seed's nuisance."""
    from disentangle.latents import encode_images
    mu, _logvar = encode_images(E, image, amp_dtype=amp_dtype)
    nuisance = sampler.sample_seed(seed, device=image.device).nuisance
    return sampler.assemble(mu, nuisance)


# ----------------------------------------------------------------------------------------------
# Genes networks (disentangle/stylegenes.py): genomes, gene swaps, traversals over variants.

def is_genes(sampler):
    return hasattr(sampler, 'num_genes') and hasattr(sampler, 'num_variants')


def _require_genes(sampler, flag):
    if not is_genes(sampler):
        raise TraversalError(f'{flag} needs a genes network (train.py --mapping=genes); this snapshot has a '
                             f'{type(sampler).__name__} latent.')


def parse_genome(text, sampler):
    """'3,0,17,...' -> int64 [1, num_genes] (one index per gene, each in range)."""
    _require_genes(sampler, '--genes')
    try:
        values = [int(part) for part in str(text).split(',')]
    except ValueError:
        raise TraversalError(f'--genes={text} is not a comma-separated list of variant indices (e.g. 3,0,17).')
    if len(values) != sampler.num_genes:
        raise TraversalError(f'--genes lists {len(values)} variants but this network has {sampler.num_genes} genes.')
    _check_variants(sampler, values, '--genes')
    return torch.tensor([values], dtype=torch.int64)


def parse_swaps(items, sampler):
    """['2=5', '0=1'] -> {2: 5, 0: 1} (gene -> variant)."""
    if not items:
        return {}
    _require_genes(sampler, '--swap-gene')
    swaps = {}
    for item in items:
        for part in str(item).split(','):
            gene, sep, variant = part.partition('=')
            try:
                if not sep:
                    raise ValueError
                swaps[int(gene)] = int(variant)
            except ValueError:
                raise TraversalError(f'--swap-gene {part!r} is not GENE=VARIANT (e.g. --swap-gene 3=7).')
    bad = [g for g in swaps if not 0 <= g < sampler.num_genes]
    if bad:
        raise TraversalError(f'--swap-gene: gene {bad[0]} does not exist; this network has genes '
                             f'0-{sampler.num_genes - 1}.')
    _check_variants(sampler, list(swaps.values()), '--swap-gene')
    return swaps


def _check_variants(sampler, values, flag):
    bad = [v for v in values if not 0 <= v < sampler.num_variants]
    if bad:
        raise TraversalError(f'{flag}: variant {bad[0]} is out of range; this network has variants '
                             f'0-{sampler.num_variants - 1} per gene.')


def apply_gene_edits(latents, sampler, genome=None, swaps=None):
    """Sampler output with its genome replaced by `genome` [1, num_genes] and then `swaps` applied."""
    if genome is None and not swaps:
        return latents
    genes = sampler.genome(latents.z) if genome is None else genome.to(latents.z.device).expand(latents.z.shape[0], -1)
    genes = genes.clone()
    for gene, variant in (swaps or {}).items():
        genes[:, gene] = variant
    return sampler.assemble(latents.get('code'), genes)


def write_gene_traversal(G, sampler, latent, outdir, name, genes=None, c=None, amp_dtype=None, noise_mode='const',
                         truncation_psi=1, mp4=None):
    """One row per chosen gene, one column per variant (all K), the rest of the genome fixed.

    Writes <name>.png/.gif(/.mp4) like write_traversal; returns EasyDict(paths, images, genes).
    """
    genes = list(range(sampler.num_genes)) if genes is None else list(genes)
    if not genes:
        raise TraversalError('no genes to traverse; pass --dims, e.g. --dims=0-3.')
    bad = [g for g in genes if not 0 <= g < sampler.num_genes]
    if bad:
        raise TraversalError(f'gene {bad[0]} does not exist: this network has {sampler.num_genes} genes '
                             f'(0-{sampler.num_genes - 1}).')
    base = sampler.genome(latent.z)                                 # [1, num_genes]
    k = sampler.num_variants
    rows = []
    for gene in genes:
        genome = base.repeat(k, 1)
        genome[:, gene] = torch.arange(k, device=genome.device)
        rows.append(genome)
    code = latent.get('code')
    code = None if code is None else code.expand(len(genes) * k, -1)
    z = sampler.assemble(code, torch.cat(rows)).z
    images = render(G, z, c=c, amp_dtype=amp_dtype, noise_mode=noise_mode, truncation_psi=truncation_psi)
    labels = [f'g{g}\nv0-{k - 1}' for g in genes]
    os.makedirs(outdir, exist_ok=True)
    png = os.path.join(outdir, name + '.png')
    _save_atomic(grid_image(images, len(genes), k, labels), png)
    paths = [png] + write_animation(animation_frames(images, len(genes), k), os.path.join(outdir, name), mp4=mp4)
    return dnnlib.EasyDict(paths=paths, images=images, genes=genes)
