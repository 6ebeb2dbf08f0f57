"""How far each code dimension of a dSprites VAE moves the sprite: the traversal grid, in numbers.

For a set of real dSprites images, every code dimension is swept over -3..3 (the VAE run's
traversal range) from the image's posterior mean while the other dimensions stay put, and the
decoder's mean images are measured: the horizontal and vertical travel of the sprite's centroid
(pixels) and the change of its mass (sum of pixel intensities, i.e. scale or disappearance).
A dimension that encodes pos_x moves x a lot and y little; a disentangled VAE has one such
dimension for x and another for y.

The same question from the encoder's side: for `--mi-images` random dSprites images, the mutual
information between each code dimension's posterior mean (MIG's 20-bin histogram) and pos_x / pos_y,
divided by the factor's entropy. Position is clearly on separate dimensions when the best dimension for
x is not the best for y and for each the runner-up carries at most half as much (the gap is MIG's term for
that factor). For scale: an encoder that reads the sprite's centroid exactly scores 0.75 with gap 0.68 per
coordinate (20 bins for 32 positions), the same encoder rotated by 45 degrees 0.17 with gap 0.00.

    python experiments/vae_traversal_motion.py --network=runs/00000-dsprites-betavae-batch64/vae-snapshot-000020.pkl

Prints one line per dimension, sorted by travel, and writes the table as JSON with --json.
"""

import json
import os
import sys

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIN_MASS = 20.0      # positions of (almost) vanished sprites are noise: ignored


@torch.no_grad()
def traversal_motion(E, Dec, images, value_range=3.0, steps=11):
    """[code_dim, 3]: mean over images of (x travel, y travel, mass change) of the decoded sprite."""
    E, Dec = E.eval(), Dec.eval()
    mu, _logvar = E(images)
    size = images.shape[-1]
    coords = torch.arange(size, dtype=torch.float32)
    motion = np.zeros([E.code_dim, 3])
    for base in mu:
        for dim in range(E.code_dim):
            codes = base.repeat(steps, 1)
            codes[:, dim] = torch.linspace(-value_range, value_range, steps)
            pictures = ((Dec.to_image(Dec(codes)).float() + 1) / 2).mean(dim=1)       # [steps, H, W]
            mass = pictures.sum(dim=(1, 2))
            x = (pictures.sum(dim=1) * coords).sum(dim=1) / mass.clamp(min=1e-6)
            y = (pictures.sum(dim=2) * coords).sum(dim=1) / mass.clamp(min=1e-6)
            seen = mass > MIN_MASS
            if int(seen.sum()) > 1:
                motion[dim, 0] += float(x[seen].max() - x[seen].min())
                motion[dim, 1] += float(y[seen].max() - y[seen].min())
            motion[dim, 2] += float(mass.max() - mass.min())
    return motion / len(mu)


@torch.no_grad()
def position_information(E, source, num_images, seed, batch=256):
    """{factor: float [D]} for pos_x and pos_y: each code dimension's MI with the factor / its entropy (posterior means)."""
    from metrics.mig import mig_from_codes
    index = np.random.RandomState(seed).randint(0, source.num_images, size=num_images)
    codes, E = [], E.eval()
    for start in range(0, num_images, batch):
        images = torch.from_numpy(source.images(index[start:start + batch])).float() / 127.5 - 1
        codes.append(E(images)[0].double().numpy())
    factors = np.asarray(source.index_to_factors(index))
    _, info, entropy = mig_from_codes(np.concatenate(codes), factors)
    names = list(source.factor_names)
    return {name: info[:, names.index(name)] / entropy[names.index(name)] for name in ('pos_x', 'pos_y')}


def separation_summary(position):
    """Per position factor: best dimension, its normalized MI, the runner-up and the gap; then whether x and y
    have different best dimensions (`separate`) and each leads its runner-up by at least half (`clearly_separate`)."""
    summary = {}
    for name, nmi in position.items():
        order = np.argsort(-nmi)
        summary[name] = dict(best_dim=int(order[0]), nmi=round(float(nmi[order[0]]), 3),
                             runner_up_dim=int(order[1]), gap=round(float(nmi[order[0]] - nmi[order[1]]), 3))
    summary['separate'] = summary['pos_x']['best_dim'] != summary['pos_y']['best_dim']
    summary['clearly_separate'] = summary['separate'] and all(summary[name]['gap'] >= summary[name]['nmi'] / 2
                                                              for name in position)
    return summary


@click.command()
@click.option('--network', 'network_pkl', help='VAE snapshot (vae-snapshot-*.pkl)', required=True, metavar='PKL')
@click.option('--images', 'num_images', help='Real dSprites images to start from', type=click.IntRange(min=1), default=16)
@click.option('--seed', help='Which images', type=int, default=1)
@click.option('--mi-images', help='Encoded images for the mutual information with pos_x / pos_y (0: skip)',
              type=click.IntRange(min=0), default=10000, show_default=True)
@click.option('--json', 'json_path', help='Also write the table here', metavar='PATH')
def main(network_pkl, num_images, seed, mi_images, json_path):
    """Measure the sprite's travel per code dimension of a dSprites VAE."""
    from training.procedural import get_builtin
    from training.vae_snapshot import VAESnapshotError, load_vae_snapshot
    try:
        data = load_vae_snapshot(network_pkl)
    except VAESnapshotError as err:
        raise click.ClickException(str(err))
    source = get_builtin('dsprites')
    if (data['E'].img_resolution, data['E'].img_channels) != (source.resolution, source.num_channels):
        raise click.ClickException(f'{network_pkl} was not trained on dSprites (64x64, 1 channel).')
    index = np.random.RandomState(seed).randint(0, source.num_images, size=num_images)
    images = torch.from_numpy(source.images(index)).float() / 127.5 - 1
    motion = traversal_motion(data['E'], data['Dec'], images)
    rows = [dict(dim=d, x_travel=round(float(m[0]), 1), y_travel=round(float(m[1]), 1), mass_change=round(float(m[2])))
            for d, m in enumerate(motion)]
    print(f'{network_pkl}: sprite travel over -3..3 per code dimension, mean of {num_images} images')
    for row in sorted(rows, key=lambda r: -(r['x_travel'] + r['y_travel'])):
        print(f'  dim {row["dim"]}: x {row["x_travel"]:5.1f} px   y {row["y_travel"]:5.1f} px   '
              f'mass {row["mass_change"]:5d}')
    result = dict(network=network_pkl, images=num_images, seed=seed, dims=rows)
    if mi_images:
        position = position_information(data['E'], source, mi_images, seed)
        summary = separation_summary(position)
        print(f'encoder: mutual information with position / its entropy, {mi_images} images')
        for name in ('pos_x', 'pos_y'):
            s = summary[name]
            print(f'  {name}: dim {s["best_dim"]} {s["nmi"]:.3f}, runner-up dim {s["runner_up_dim"]} '
                  f'{s["nmi"] - s["gap"]:.3f} (gap {s["gap"]:.3f})')
        verdict = ('clearly on separate dimensions' if summary['clearly_separate'] else
                   'on separate best dimensions, each shared with a runner-up' if summary['separate'] else
                   'on the same best dimension')
        print(f'  x and y {verdict}')
        result.update(mi_images=mi_images, position_nmi={k: [round(float(v), 4) for v in nmi] for k, nmi in position.items()},
                      separation=summary)
    if json_path:
        tmp = json_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, json_path)


if __name__ == '__main__':
    main()
