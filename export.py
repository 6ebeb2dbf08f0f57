"""Export a network snapshot to a weights-only `.pt` that loads without running code (docs/SHARING.md)."""

import os

import click
import torch

from dnnlib import cli
from dnnlib.cli import UserError, os_errors_as_user_errors
from dnnlib.progress import Progress


# The snapshot keys that hold networks (GAN, VAE); an export of a dict with none of them is no use.
NETWORK_KEYS = ('G_ema', 'G', 'D', 'E', 'Dec')


@click.command(cls=cli.Command, context_settings=dict(show_default=True))
@click.option('--network', 'network_pkl', help='Snapshot to export (GAN or VAE .pkl, path or URL)', required=True,
              metavar='PKL')
@click.option('--dest', help='Where to write the export (.pt)', required=True, metavar='PT')
@click.option('--force', help='Overwrite --dest if it exists', is_flag=True)
@os_errors_as_user_errors
def main(network_pkl, dest, force):
    """Export a snapshot's networks and plug-in state to a file loadable with torch.load(weights_only=True).

    Pickles run code when loaded; share the export instead. generate.py, calc_metrics.py and
    train.py --vae read `.pt` exports without unpickling anything.

    \b
    # Export, then generate from the export:
    python export.py --network=runs/00000-dsprites-idgan-batch8/network-snapshot-000010.pkl --dest=idgan.pt
    python generate.py --network=idgan.pt --seeds=0-7 --outdir=out

    \b
    # Anyone can inspect an export with plain torch, no project code involved:
    python -c "import torch; print(torch.load('idgan.pt', weights_only=True)['modules'].keys())"
    """
    from torch_utils import safe_export
    from training.snapshot import SnapshotError, load_network_pkl

    if not dest.endswith('.pt'):
        raise UserError(f'--dest={dest} must end in .pt (the loaders take the weights-only path for .pt files).')
    if os.path.exists(dest) and not force:
        raise UserError(f'--dest={dest} exists; pass --force to overwrite it.')
    if os.path.dirname(os.path.abspath(dest)) and not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        raise UserError(f'the folder of --dest={dest} does not exist; create it first.')
    if network_pkl.endswith('.pt'):
        raise UserError(f'--network={network_pkl} is already an export.')
    try:
        snapshot = load_network_pkl(network_pkl)
    except SnapshotError as err:
        raise UserError(str(err))
    if not any(isinstance(snapshot.get(key), torch.nn.Module) for key in NETWORK_KEYS):
        raise UserError(f'{network_pkl} holds no networks (none of {", ".join(NETWORK_KEYS)}); export a '
                        f'network-snapshot-*.pkl or vae-snapshot-*.pkl.')

    with Progress(3, desc='exporting', unit='step') as progress:
        try:
            export, skipped = safe_export.snapshot_to_export(snapshot)
        except safe_export.ExportError as err:
            raise UserError(f'{network_pkl} cannot be exported: {err}')
        progress.update(1)
        # Rebuild from the export in this process before writing: a plug-in whose state does not
        # follow from its constructor arguments and tensors fails here, not on the user's side.
        try:
            rebuilt = safe_export.export_to_snapshot(export)
        except safe_export.ExportError as err:
            raise UserError(f'{network_pkl} does not survive export: {err}')
        for key, module in rebuilt.items():
            if isinstance(module, torch.nn.Module):
                _check_same_tensors(snapshot[key], module, key)
        progress.update(1)
        safe_export.save_export(export, dest)
        progress.update(1)
    kept = ', '.join(k for k, v in export['modules'].items() if v is not None)
    print(f'wrote {dest} ({os.path.getsize(dest) / 2**20:.1f} MiB): modules {kept}'
          + (f'; left out {", ".join(skipped)}' if skipped else ''))


def _check_same_tensors(original, rebuilt, key):
    a, b = original.state_dict(), rebuilt.state_dict()
    for name, tensor in a.items():
        if not torch.equal(tensor.cpu(), b[name]):
            raise UserError(f'{key}.{name} differs after rebuilding from the export; the class keeps state outside '
                            f'its constructor arguments, parameters and buffers.')


if __name__ == '__main__':
    main()
