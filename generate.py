"""Generate images with a trained network snapshot (ours or an official StyleGAN2-ADA pickle)."""

import os

import click
import PIL.Image
import torch

from dnnlib import cli
from dnnlib.cli import (FINITE_FLOAT, FiniteFloatRange, makedirs_or_fail, os_errors_as_user_errors, parse_range,
                        save_image)
from dnnlib.progress import Progress
from torch_utils.precision import PRECISIONS, autocast_dtype, resolve_precision


def _save_png(img, path):
    """img: [C, H, W] uint8 tensor; written atomically."""
    arr = img.permute(1, 2, 0).cpu().numpy()
    image = PIL.Image.fromarray(arr[:, :, 0], 'L') if arr.shape[2] == 1 else PIL.Image.fromarray(arr, 'RGB')
    save_image(image, path)


def to_uint8(img):
    """[N, C, H, W] in [-1, 1] -> uint8."""
    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


@click.command(cls=cli.Command, context_settings=dict(show_default=True))
@click.option('--network', 'network_pkl', help='Network snapshot (path or URL)', required=True, metavar='PKL')
@click.option('--seeds', help='Seeds, e.g. 0-7 or 1,5,9', metavar='LIST', default='0-7')
@click.option('--trunc', 'truncation_psi', help='Truncation psi', type=FINITE_FLOAT, default=1.0)
@click.option('--noise-mode', help='Noise mode', type=click.Choice(['const', 'random', 'none']), default='const')
@click.option('--class', 'class_idx', help='Class label (conditional networks)', type=click.IntRange(min=0))
@click.option('--outdir', help='Where to save the images', metavar='DIR', required=True)
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', metavar='DEVICE')
@click.option('--precision', help='Inference precision', type=click.Choice(PRECISIONS), default='fp32')
@click.option('--traverse', help='Write a latent traversal per seed (PNG grid, GIF, MP4 with imageio-ffmpeg)', is_flag=True)
@click.option('--dims', help='--traverse: dimensions to sweep, e.g. 0-3,7 [default: every code dimension; first 10 of z]',
              metavar='LIST')
@click.option('--steps', help='--traverse: values per dimension', type=click.IntRange(min=2), default=9)
@click.option('--encode', 'encode_path', help='ID-GAN: re-render a real image from its code (with each seed\'s nuisance)',
              metavar='PNG')
@click.option('--set', 'edits', help='Set a code dimension before rendering, DIM=VALUE (repeatable)', multiple=True,
              metavar='DIM=VALUE')
@click.option('--projected-w', 'projected_w', help='Render the w of projector.py (projected_w.npz) instead of seeds',
              metavar='NPZ')
@click.option('--compare-vae', help='ID-GAN: also render the VAE decoder for the same codes (compare-vae.png; '
              'with --traverse its traversals too)', is_flag=True)
# Genes networks (StyleGenes, disentangle/stylegenes.py): genome editing and conditional sampling.
@click.option('--genes', 'genome_text', help='Genes networks: render this genome, one variant per gene (e.g. 3,0,17,...)',
              metavar='LIST')
@click.option('--swap-gene', 'swaps', help='Genes networks: set one gene\'s variant, GENE=VARIANT (repeatable)',
              multiple=True, metavar='GENE=VARIANT')
@click.option('--condition', 'conditions', help='Genes networks: sample genomes realising FACTOR=VALUE (repeatable)',
              multiple=True, metavar='FACTOR=VALUE')
@click.option('--classifier', help='--condition: "oracle" (the dataset\'s factor oracle) or a TorchScript/pickled classifier',
              default='oracle', metavar='oracle|PATH')
@click.option('--condition-samples', help='--condition: classified samples for the gene statistics',
              type=click.IntRange(min=1), default=2000)
@click.option('--condition-temp', help='--condition: temperature of the variant distributions (<1 sharpens)',
              type=FiniteFloatRange(min=0, min_open=True), default=1.0)
@os_errors_as_user_errors
def main(network_pkl, seeds, truncation_psi, noise_mode, class_idx, outdir, device, precision, traverse, dims, steps,
         encode_path, edits, projected_w, compare_vae, genome_text, swaps, conditions, classifier, condition_samples, condition_temp):
    """Generate images with a trained network.

    \b
    # Eight images from a snapshot, on CPU:
    python generate.py --network=runs/00000-dsprites-stylegan2-batch8/network-snapshot-000002.pkl --seeds=0-7 --outdir=out

    \b
    # Truncated samples of a conditional model, class 3:
    python generate.py --network=snap.pkl --seeds=0-15 --trunc=0.7 --class=3 --outdir=out

    \b
    # ID-GAN: sweep every code dimension for 4 seeds (traverse-seed*.png/.gif), or chosen z dims of any GAN:
    python generate.py --network=snap.pkl --traverse --seeds=0-3 --outdir=out
    python generate.py --network=snap.pkl --traverse --dims=0-3 --steps=7 --seeds=0 --outdir=out

    \b
    # ID-GAN: encode a real image, re-render it with fresh nuisance, and move code dimension 4 to 1.5:
    python generate.py --network=snap.pkl --encode=photo.png --set 4=1.5 --seeds=0-3 --outdir=out

    \b
    # ID-GAN: the VAE decoder beside the GAN for the same codes (samples, and traversals with --traverse):
    python generate.py --network=snap.pkl --compare-vae --traverse --seeds=0-7 --outdir=out

    \b
    # Genes networks: one genome, one swapped gene, the variants of genes 0-3, conditional sampling:
    python generate.py --network=genes.pkl --genes=3,0,17,5,9,9,1,0,2,4,4,8,30,12,7,6 --outdir=out
    python generate.py --network=genes.pkl --swap-gene 2=5 --seeds=0-7 --outdir=out
    python generate.py --network=genes.pkl --traverse --dims=0-3 --seeds=0 --outdir=out
    python generate.py --network=genes.pkl --condition shape=heart --seeds=0-63 --outdir=out
    """
    from training.latent import sample_for_seed
    from training.snapshot import SnapshotError, load_generator

    try:
        seed_list = parse_range(seeds)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--seeds')
    try:
        device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    except RuntimeError:
        raise click.ClickException(f'--device={device} is not a torch device name (try cpu or cuda).')
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.ClickException(f'--outdir={outdir} is a file; give a directory for the images.')
    amp = autocast_dtype(resolve_precision(precision, device))
    try:
        G, sampler, _data = load_generator(network_pkl, device=device)
    except SnapshotError as err:
        raise click.ClickException(str(err))

    if projected_w is not None:
        _render_projected_w(G, projected_w, outdir, noise_mode, amp, device,
                            others=traverse or encode_path or edits or compare_vae or genome_text or swaps or conditions)
        return
    c = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim != 0:
        if class_idx is None:
            raise click.ClickException('this network is conditional: pass --class (0 .. %d).' % (G.c_dim - 1))
        if class_idx >= G.c_dim:
            raise click.ClickException(f'--class={class_idx} is out of range for a network with {G.c_dim} classes.')
        c[:, class_idx] = 1
    elif class_idx is not None:
        print('warning: --class is ignored, the network is unconditional')

    plugin = image = compare = vae_decoder = genome = conditioner = None
    if traverse or encode_path or edits or compare_vae or genome_text or swaps or conditions:
        plugin = _traversal_plugin()
        try:
            if compare_vae:
                from disentangle import compare
                vae_decoder = compare.check_comparable(_data, sampler).eval().requires_grad_(False).to(device)
            edit_values = plugin.parse_edits(edits)
            dim_list = parse_range(dims) if dims is not None else None
            if encode_path is not None:
                if _data.get('E') is None or not hasattr(sampler, 'assemble'):
                    raise plugin.TraversalError(f'--encode needs an ID-GAN snapshot (with an encoder "E" and a code '
                                                f'sampler); {network_pkl} has none.')
                image = plugin.load_image_for_encoder(encode_path, _data['E'], device=device)
                encoder = _data['E'].eval().requires_grad_(False).to(device)
            genome = plugin.parse_genome(genome_text, sampler) if genome_text else None
            swaps = plugin.parse_swaps(swaps, sampler)
            if conditions:
                from disentangle.gene_conditioning import fit_conditioner
                conditioner, classifier = fit_conditioner(G, sampler, _data, conditions, classifier, condition_samples,
                                                          condition_temp, c=c, device=device, noise_mode=noise_mode,
                                                          truncation_psi=truncation_psi)
            if edit_values and not (hasattr(sampler, 'code_dim') or hasattr(sampler, 'set_code') or plugin.is_genes(sampler)):
                raise plugin.TraversalError(f'--set edits code dimensions, and {network_pkl} has no code (a plain '
                                            f'StyleGAN2 z); train with --cfg=idgan or infogan, or sweep z dimensions '
                                            f'with --traverse --dims.')
            if traverse and dim_list is not None and not plugin.is_genes(sampler):
                plugin.check_dims(sampler, dim_list)
            # Every edit is checked before anything is written (the first seed's latents stand in).
            if seed_list and conditioner is None:
                probe = plugin.apply_gene_edits(sample_for_seed(sampler, seed_list[0], device=device), sampler, genome,
                                                swaps)
                plugin.apply_edits(probe.z, sampler, edit_values)
        except ValueError as err:
            raise click.ClickException(str(err))

    makedirs_or_fail(outdir, '--outdir')
    written = 0
    compared = []
    predicted = []          # --condition: the classifier's reading of every image written
    with Progress(len(seed_list), desc='generating', unit='seed') as progress:
        for seed in seed_list:
            latents = sample_for_seed(sampler, seed, device=device)
            name = f'seed{seed:04d}'
            if plugin is not None:
                try:
                    if conditioner is not None:
                        latents = conditioner.latent_for_seed(sampler, seed, device=device)
                    latents = plugin.apply_gene_edits(latents, sampler, genome, swaps)
                    if image is not None:
                        latents = plugin.encode_latent(encoder, sampler, image, seed, amp_dtype=amp)
                        name = f'encode-{os.path.splitext(os.path.basename(encode_path))[0]}-{name}'
                    latents.z = plugin.apply_edits(latents.z, sampler, edit_values)
                    if vae_decoder is not None:
                        compared.append(latents)
                    if traverse and vae_decoder is not None:
                        compare.write_vae_traversal(G, vae_decoder, sampler, latents, outdir, f'traverse-{name}-vae',
                                                    dims=dim_list, steps=steps, amp_dtype=amp)
                        written += 1
                    if traverse and plugin.is_genes(sampler):
                        out = plugin.write_gene_traversal(G, sampler, latents, outdir, f'traverse-genes-{name}',
                                                          genes=dim_list, c=c, amp_dtype=amp, noise_mode=noise_mode,
                                                          truncation_psi=truncation_psi)
                        written += len(out.paths)
                    if traverse and (not plugin.is_genes(sampler) or hasattr(sampler, 'code_dim')):
                        out = plugin.write_traversal(G, sampler, latents, outdir, f'traverse-{name}',
                                                     dims=None if plugin.is_genes(sampler) else dim_list,
                                                     steps=steps, c=c, amp_dtype=amp, noise_mode=noise_mode,
                                                     truncation_psi=truncation_psi)
                        written += len(out.paths)
                    if traverse:
                        progress.update(1)
                        continue
                except ValueError as err:
                    raise click.ClickException(str(err))
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                img = G(latents.z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
            _save_png(to_uint8(img)[0], os.path.join(outdir, f'{name}.png'))
            if conditioner is not None:
                predicted.append(classifier.predict(img.float().clamp(-1, 1)).cpu())
            written += 1
            progress.update(1)
    if compared:
        compare.write_comparison(G, vae_decoder, sampler, compared, outdir, c=c, amp_dtype=amp, noise_mode=noise_mode,
                                 truncation_psi=truncation_psi)
        written += 1
    if image is not None:  # what the encoder saw, to compare with the re-renderings
        stem = os.path.splitext(os.path.basename(encode_path))[0]
        _save_png(to_uint8(image)[0], os.path.join(outdir, f'encode-{stem}-input.png'))
        written += 1
    if conditioner is not None:
        from disentangle.gene_conditioning import write_report
        report = write_report(os.path.join(outdir, 'condition.json'), conditioner, torch.cat(predicted).numpy(),
                              ','.join(conditions), classifier_name=type(classifier).__name__)
        print(f'condition {report["condition"]}: hit rate {report["conditional_hit_rate"]:.3f} over '
              f'{report["conditional_images"]} images vs base rate {report["base_rate"]:.3f} of '
              f'{report["samples_for_statistics"]} unconditional samples (condition.json)')
        written += 1
    print(f'wrote {written} files to {outdir}')


def _render_projected_w(G, path, outdir, noise_mode, amp, device, others=False):
    """proj00.png, proj01.png, ... from projector.py's projected_w.npz (`w`: [N, num_ws, w_dim]), as StyleGAN2-ADA."""
    import numpy as np
    if others:
        raise click.ClickException('--projected-w renders the projection alone; drop --traverse, --encode, --set and '
                                   'the gene options.')
    try:
        with np.load(path) as data:
            ws = torch.from_numpy(data['w']).to(device=device, dtype=torch.float32)
    except FileNotFoundError:
        raise click.ClickException(f'--projected-w={path} does not exist.') from None
    except (OSError, ValueError, KeyError) as err:
        raise click.ClickException(f'--projected-w={path} is not a projected_w.npz with a "w" array ({err}).') from None
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        raise click.ClickException(f'--projected-w={path} holds w of shape {list(ws.shape)}, but this network needs '
                                   f'[N, {G.num_ws}, {G.w_dim}]; project with the same network.')
    makedirs_or_fail(outdir, '--outdir')
    for idx, w in enumerate(ws):
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
            img = G.synthesis(w[None], noise_mode=noise_mode)
        _save_png(to_uint8(img)[0], os.path.join(outdir, f'proj{idx:02d}.png'))
    print(f'wrote {len(ws)} files to {outdir}')


def _traversal_plugin():
    """disentangle.traverse, imported only when its flags are used (generate.py works without the plug-in)."""
    try:
        from disentangle import traverse
    except ImportError:
        raise click.ClickException('--traverse, --encode, --set and the gene options need the disentangle/ plug-in, '
                                   'which is not installed here; generate plain images without them.')
    return traverse


if __name__ == '__main__':
    main()
