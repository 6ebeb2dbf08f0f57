"""Opening VAE snapshots (`vae-snapshot-*.pkl`, the `ckpt.pkl` of `train.py --cfg=idgan --vae=...`).

A VAE snapshot is a pickled dict with `E` (encoder: `E(x) -> (mu, logvar)` for x in [-1, 1] at
`E.img_resolution` with `E.img_channels` channels, codes of width `E.code_dim`), `Dec` (decoder),
`vae_kwargs`, `training_set_kwargs` and `resume_state`; see training/vae_loop.py.

Fitting rule of `load_vae_encoder`: the channels must be equal; the resolution of the data or
generator may be the encoder's times a power of two, because ID-GAN area-downsamples generated
images to the encoder's resolution before encoding (a 256x256 generator can distil a 64x64 VAE).
"""

from training.snapshot import SnapshotError, load_network_pkl


class VAESnapshotError(SnapshotError):
    """A VAE snapshot that cannot be used here, with one sentence saying why and what to do."""


def load_vae_snapshot(path):
    """The snapshot dict, checked to hold a usable encoder `E`; VAESnapshotError otherwise."""
    try:
        data = load_network_pkl(path, what='VAE snapshot')
    except VAESnapshotError:
        raise
    except SnapshotError as err:
        raise VAESnapshotError(str(err)) from None
    E = data.get('E')
    if E is None:
        if data.get('G_ema') is not None or data.get('G') is not None:
            raise VAESnapshotError(f'{path} is a GAN snapshot, not a VAE snapshot; pass a vae-snapshot-*.pkl '
                                   f'written by train.py --cfg=betavae|btcvae|factorvae.')
        raise VAESnapshotError(f'{path} holds no encoder (no "E" key); pass a vae-snapshot-*.pkl.')
    missing = [name for name in ('img_resolution', 'img_channels', 'code_dim') if not hasattr(E, name)]
    if missing or not callable(E):
        raise VAESnapshotError(f'{path}: its "E" is not a VAE encoder (missing {", ".join(missing) or "forward"}); '
                               f'pass a vae-snapshot-*.pkl.')
    return data


def resolution_fits(encoder_resolution, resolution, exact=False):
    """True when images at `resolution` can be fed to an encoder at `encoder_resolution`."""
    if exact or resolution < encoder_resolution or resolution % encoder_resolution != 0:
        return resolution == encoder_resolution
    factor = resolution // encoder_resolution
    return factor & (factor - 1) == 0


def check_vae_snapshot_fits(data, resolution=None, num_channels=None, code_dim=None, exact_resolution=False,
                            what='the data', path=None):
    """Raise VAESnapshotError unless the snapshot's encoder fits (None = do not check that property).

    `data` is a snapshot dict or an encoder; `what` names the other side in the message.
    """
    E = data['E'] if isinstance(data, dict) else data
    name = path or 'the VAE snapshot'
    trained = f'{E.img_resolution}x{E.img_resolution} with {E.img_channels} channel(s)'
    if num_channels is not None and int(num_channels) != E.img_channels:
        raise VAESnapshotError(f'{name} was trained on {trained} but {what} has {num_channels} channel(s); '
                               f'train the VAE on the same data (train.py --cfg=betavae --data=...).')
    if resolution is not None and not resolution_fits(E.img_resolution, int(resolution), exact_resolution):
        rule = 'the same resolution' if exact_resolution else f'{E.img_resolution} times a power of two'
        raise VAESnapshotError(f'{name} was trained on {trained} but {what} is {resolution}x{resolution}; '
                               f'it needs {rule}: train the VAE at a matching resolution '
                               f'(dataset_tool.py --resolution=...).')
    if code_dim is not None and int(code_dim) != E.code_dim:
        raise VAESnapshotError(f'{name} has {E.code_dim} code dimensions but {code_dim} were asked for; '
                               f'use --code-dim={E.code_dim} or start a new run.')


def load_vae_encoder(path, device='cpu', resolution=None, num_channels=None):
    """The frozen encoder of a VAE snapshot, in eval mode on `device`.

    `resolution` / `num_channels` describe the images it will see (a dataset or a generator's
    output); VAESnapshotError (a SnapshotError) if they do not fit, see the module docstring.
    """
    data = load_vae_snapshot(path)
    check_vae_snapshot_fits(data, resolution=resolution, num_channels=num_channels, what='the data to encode',
                            path=str(path))
    return data['E'].eval().requires_grad_(False).to(device)
