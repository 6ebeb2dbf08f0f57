"""Evaluate metrics of a network snapshot (VAE, ID-GAN, InfoGAN, or StyleGAN2) and report them as JSON lines."""

import os

import click
import torch

from dnnlib import cli
from dnnlib.cli import UserError, makedirs_or_fail, os_errors_as_user_errors
from metrics import metric_main
from metrics.ground_truth import MetricError


def _check_channels(snapshot, network_pkl, data):
    """Refuse data whose images have another channel count than the network was trained on.

    The metrics could convert them (grey to colour, colour to grey), but a dSprites model scored on
    3D Shapes measures nothing: the factors it learnt are not in those images.
    """
    import dnnlib
    from training.dataset import DatasetError, dataset_kwargs
    network = next((snapshot[key] for key in ('E', 'Q', 'G_ema', 'G', 'Dec') if snapshot.get(key) is not None), None)
    channels = getattr(network, 'img_channels', None)
    if channels is None:
        return
    try:
        dataset = dnnlib.util.construct_class_by_name(**dataset_kwargs(data, use_labels=False, xflip=False,
                                                                       max_size=None))
    except DatasetError as err:
        raise UserError(str(err))
    if dataset.num_channels != channels:
        raise UserError(f'{network_pkl} was trained on {channels}-channel images but --data={data} has '
                        f'{dataset.num_channels}-channel images; evaluate it on the data it was trained on.')


def _parse_metrics(text):
    try:
        names = metric_main.parse_metric_names(text)
    except MetricError as err:
        raise UserError(str(err))
    if not names:
        raise UserError('--metrics is empty; give a comma-separated list such as factorvae,mig,dci.')
    return names


@click.command(cls=cli.Command, context_settings=dict(show_default=True))
@click.option('--network', 'network_pkl', help='Network snapshot (path or URL)', required=True, metavar='PKL')
@click.option('--metrics', help='Comma-separated metrics', default='factorvae,mig,dci,sap,betavae', metavar='LIST')
@click.option('--data', help='Dataset (built-in name, folder or zip) [default: the snapshot\'s training set]', metavar='DATA')
@click.option('--run-dir', help='Where to append metric-<name>.jsonl [default: the snapshot\'s folder]', metavar='DIR')
@click.option('--seed', help='Random seed of the evaluation (disentanglement_lib uses 0)', type=int, default=0)
@click.option('--options', help='JSON object of metric options, e.g. sample sizes, applied to every metric that has them',
              metavar='JSON')
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', metavar='DEVICE')
@click.option('--verbose/--quiet', help='Print progress lines with ETA', default=True)
@os_errors_as_user_errors
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
        makedirs_or_fail(run_dir, '--run-dir')  # an explicit --run-dir is where the user wants the jsonl files

    from training.snapshot import SnapshotError, load_network_pkl
    try:
        snapshot = load_network_pkl(network_pkl)
    except SnapshotError as err:
        raise UserError(str(err))
    if data is not None:
        _check_channels(snapshot, network_pkl, data)
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
