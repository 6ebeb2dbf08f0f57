"""Evaluate metrics of a network snapshot (VAE, ID-GAN, InfoGAN, or StyleGAN2) and report them as JSON lines."""

import os

import click
import torch

from metrics import metric_main
from metrics.ground_truth import MetricError


class UserError(click.ClickException):
    """A bad option or input, stated in one sentence with the fix."""


def _parse_metrics(text):
    try:
        names = metric_main.parse_metric_names(text)
    except MetricError as err:
        raise UserError(str(err))
    if not names:
        raise UserError('--metrics is empty; give a comma-separated list such as factorvae,mig,dci.')
    return names


@click.command(context_settings=dict(show_default=True))
@click.option('--network', 'network_pkl', help='Network snapshot (path or URL)', required=True, metavar='PKL')
@click.option('--metrics', help='Comma-separated metrics', default='factorvae,mig,dci,sap,betavae', metavar='LIST')
@click.option('--data', help='Dataset (built-in name, folder or zip) [default: the snapshot\'s training set]', metavar='DATA')
@click.option('--run-dir', help='Where to append metric-<name>.jsonl [default: the snapshot\'s folder]', metavar='DIR')
@click.option('--seed', help='Random seed of the evaluation (disentanglement_lib uses 0)', type=int, default=0)
@click.option('--options', help='JSON object of metric options, e.g. sample sizes, applied to every metric that has them',
              metavar='JSON')
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', metavar='DEVICE')
@click.option('--verbose/--quiet', help='Print progress lines with ETA', default=True)
def main(network_pkl, metrics, data, run_dir, seed, options, device, verbose):
    """Calculate metrics of a network snapshot.

    \b
    # The five standard disentanglement scores of a VAE on dSprites (disentanglement_lib defaults):
    python calc_metrics.py --network=runs/00000-dsprites-betavae/vae-snapshot-000500.pkl \\
        --metrics=factorvae,mig,dci,sap,betavae --data=dsprites

    \b
    # A quick look with smaller samples:
    python calc_metrics.py --network=vae.pkl --metrics=mig,dci --data=dsprites --options='{"num_train": 2000}'

    \b
    # Generator-side disentanglement and offline fidelity of a GAN (ID-GAN, InfoGAN, StyleGAN2) or VAE snapshot:
    python calc_metrics.py --network=runs/.../network-snapshot-000010.pkl --metrics=mig_gen,dci_gen,fd_oracle \\
        --data=dsprites

    \b
    # FID as StyleGAN2-ADA reports it (downloads the Inception detector once):
    python calc_metrics.py --network=snap.pkl --metrics=fid50k_full --options='{"num_real": 10000, "num_gen": 10000}'

    \b
    Encoder-side (E or Q): factorvae, betavae, mig, dci, sap, modularity (modularity + explicitness),
    gaussian_tc (Gaussian total correlation and the other unsupervised scores).
    Generator-side (generator or VAE decoder + factor oracle): mig_gen, dci_gen.
    Fidelity: fid50k_full, kid50k_full, pr50k3_full (Inception/VGG16 by URL; "detector_url" option),
    fd_oracle, kid_oracle, pr_oracle (the dataset's factor oracle, offline). See docs/METRICS.md.
    Each result is printed as one JSON line and appended to <run-dir>/metric-<name>.jsonl.
    """
    metric_names = _parse_metrics(metrics)
    try:
        metric_options = metric_main.parse_metric_options(options, metric_names, flag='--options')
    except MetricError as err:
        raise UserError(str(err))
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UserError(f'--device={device} is not a torch device name (try cpu or cuda).')
    if run_dir is None and os.path.isfile(network_pkl):
        run_dir = os.path.dirname(os.path.abspath(network_pkl))
    elif run_dir is not None:
        os.makedirs(run_dir, exist_ok=True)  # an explicit --run-dir is where the user wants the jsonl files

    from training.snapshot import SnapshotError, load_network_pkl
    try:
        snapshot = load_network_pkl(network_pkl)
    except SnapshotError as err:
        raise UserError(str(err))
    for metric in metric_names:
        try:
            result = metric_main.calc_metric(metric=metric, network_pkl=network_pkl, snapshot_data=snapshot,
                                             data=data, run_dir=run_dir, device=device, seed=seed,
                                             progress=verbose, **metric_options)
        except MetricError as err:
            raise UserError(f'{metric}: {err}')
        except Exception as err:
            # Dataset problems (missing path, no factors) carry their own one-sentence message.
            if type(err).__name__ in ('DatasetError', 'SnapshotError'):
                raise UserError(f'{metric}: {err}')
            raise
        metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=network_pkl)


if __name__ == '__main__':
    main()
