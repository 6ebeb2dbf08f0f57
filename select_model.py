"""Pick the most disentangled model among several, without labels: ModelCentrality (Lin et al. 2020)."""

import glob
import json
import os

import click
import numpy as np
import torch

from dnnlib import cli


UserError = cli.UserError


def expand_networks(text):
    """Comma-separated paths and globs -> sorted unique existing files (in the order given per item)."""
    paths = []
    for item in [part.strip() for part in str(text).split(',') if part.strip()]:
        matches = sorted(glob.glob(item)) if any(ch in item for ch in '*?[') else [item]
        if not matches:
            raise UserError(f'--networks: {item} matches no file; check the glob or the run directory.')
        for path in matches:
            if not os.path.isfile(path):
                raise UserError(f'--networks: {path} does not exist; pass snapshot files or a glob.')
            if path not in paths:
                paths.append(path)
    if len(paths) < 2:
        raise UserError(f'--networks gives {len(paths)} snapshot(s); ModelCentrality compares at least 2.')
    return paths


def _write_json(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def supervised_scores(models, data, seed, votes, verbose):
    """Each model's FactorVAE score on the ground-truth dataset `data` (metrics/factor_vae.py)."""
    from metrics.factor_vae import compute_factor_vae
    from metrics.ground_truth import as_ground_truth
    from training.dataset import open_dataset
    ground_truth = as_ground_truth(open_dataset(data))
    sizes = {} if votes is None else dict(num_train=votes, num_eval=max(votes // 2, 2), num_variance_estimate=votes)
    out = []
    for model in models:
        if verbose:
            print(f'supervised FactorVAE score of {model.name} on {data}...')
        result = compute_factor_vae(ground_truth, model.encode, np.random.RandomState(seed), **sizes)
        out.append(result['eval_accuracy'])
    return out


@click.command(cls=cli.Command, context_settings=dict(show_default=True))
@click.option('--networks', help='Snapshots: comma-separated paths and/or globs (quote globs)', required=True,
              metavar='PKLS')
@click.option('--groups', help='Labelled groups per model (M; one code held fixed per group)', type=click.IntRange(min=2),
              default=500)
@click.option('--group-size', help='Images per group (L)', type=click.IntRange(min=2), default=100)
@click.option('--std-samples', help='Free samples per model for the per-dimension variances', type=click.IntRange(min=2),
              default=10000)
@click.option('--out', 'out_path', help='JSON file for the matrix and the ranking', default='model_centrality.json',
              metavar='JSON')
@click.option('--data', help='Optional ground-truth dataset (e.g. dsprites): also report supervised FactorVAE scores',
              metavar='DATA')
@click.option('--votes', help='--data: training votes of the supervised score [default: 10000, eval half of it]',
              type=click.IntRange(min=2))
@click.option('--seed', help='Random seed of the rendered data', type=int, default=0)
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', metavar='DEVICE')
@click.option('--verbose/--quiet', help='Print progress lines with ETA', default=True)
@cli.os_errors_as_user_errors
def main(networks, groups, group_size, std_samples, out_path, data, votes, seed, device, verbose):
    """Rank trained models by ModelCentrality and select the medoid.

    Every model renders labelled data from its own codes; every model's encoder (Q of InfoGAN,
    E of a VAE or ID-GAN) is scored on every model's data with the FactorVAE score; the matrix is
    symmetrised and each model ranked by its mean similarity to the others. See docs/INFOGAN.md.

    \b
    # Select among the last snapshots of several InfoGAN-CR runs (the paper's M=500, L=100):
    python select_model.py --networks='runs/*infogan-cr*/network-snapshot-000020.pkl'

    \b
    # A quicker look, with supervised FactorVAE scores and their rank correlation on dSprites:
    python select_model.py --networks=a.pkl,b.pkl,c.pkl,d.pkl --groups=100 --group-size=32 --std-samples=2000 \\
        --data=dsprites --votes=2000 --out=centrality.json
    """
    from disentangle.centrality import CentralityError, SnapshotModel, centrality, cross_scores, ranking
    from training.snapshot import SnapshotError, load_network_pkl

    paths = expand_networks(networks)
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    try:
        models = [SnapshotModel(load_network_pkl(path), name=path, device=device) for path in paths]
        scores = cross_scores(models, num_groups=groups, group_size=group_size, std_samples=std_samples, seed=seed,
                              verbose=verbose)
        symmetric, values = centrality(scores)
    except (CentralityError, SnapshotError) as err:
        raise UserError(str(err))
    ranked = ranking(paths, scores)
    result = dict(networks=paths, groups=groups, group_size=group_size, std_samples=std_samples, seed=seed,
                  scores=scores.tolist(), symmetric=symmetric.tolist(), centrality=values.tolist(),
                  ranking=[dict(rank=r, network=name, centrality=value) for r, name, value in ranked],
                  selected=ranked[0][1])
    supervised = None
    if data is not None:
        try:
            supervised = supervised_scores(models, data, seed, votes, verbose)
        except Exception as err:
            if type(err).__name__ in ('DatasetError', 'MetricError'):
                raise UserError(f'--data={data}: {err}')
            raise
        from scipy.stats import spearmanr
        defined = len(set(supervised)) > 1 and len(set(values.tolist())) > 1
        rho = spearmanr(values, supervised).statistic if defined else float('nan')
        result.update(supervised_factorvae=supervised, spearman=None if np.isnan(rho) else float(rho), data=data)
        for entry in result['ranking']:
            entry['supervised_factorvae'] = supervised[paths.index(entry['network'])]
    _write_json(out_path, result)

    print()
    print(f'{"rank":>4}  {"centrality":>10}  ' + (f'{"FactorVAE":>9}  ' if supervised else '') + 'network')
    for entry in result['ranking']:
        extra = f'{entry["supervised_factorvae"]:9.3f}  ' if supervised else ''
        print(f'{entry["rank"]:4d}  {entry["centrality"]:10.3f}  {extra}{entry["network"]}')
    if supervised:
        rho = result['spearman']
        print(f'Spearman rank correlation (centrality vs supervised FactorVAE): '
              f'{"undefined (equal scores)" if rho is None else f"{rho:+.3f}"}')
    print(f'selected: {result["selected"]}')
    print(f'wrote {out_path}')


if __name__ == '__main__':
    main()
