"""Small utilities shared by the whole code base: EasyDict, objects by dotted name, open_url, Logger.

The names and signatures follow StyleGAN2-ADA's `dnnlib.util`, because pickles written by that code
base contain `dnnlib.util.EasyDict` objects and network source code that expects this module.
"""

import glob
import hashlib
import importlib
import io
import os
import re
import sys
import time
import types
import urllib.parse
import uuid

import requests

from dnnlib.progress import Progress, format_time  # noqa: F401  (format_time is part of this module's API)

# ------------------------------------------------------------------------------------------------
# EasyDict


class EasyDict(dict):
    """A dict whose keys can also be read and written as attributes: `kwargs.lr` is `kwargs['lr']`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            # AttributeError (not KeyError) keeps pickle, copy and hasattr() working: they probe for
            # optional hooks such as __getstate__ and __deepcopy__ with getattr().
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


# ------------------------------------------------------------------------------------------------
# Objects by dotted name (how configs choose classes: `class_name='training.loss.StyleGAN2Loss'`)


class ObjectNotFoundError(ImportError):
    """A dotted name in a config does not resolve to a Python object."""


_NAME_SHORTHANDS = [('np.', 'numpy.'), ('tf.', 'tensorflow.')]


def _is_missing_module_error(error, module_name):
    """True when `error` says that `module_name` itself (or one of its parents) does not exist.

    Any other ImportError comes from *inside* an existing module and must not be hidden, or a typo
    in an import statement would be reported as "class not found".
    """
    missing = getattr(error, 'name', None)
    if not isinstance(error, ModuleNotFoundError) or missing is None:
        return False
    return module_name == missing or module_name.startswith(missing + '.')


def get_obj_from_module(module, obj_name):
    """Follow the attribute path `obj_name` ('A.b', or '' for the module itself) inside `module`."""
    obj = module
    for part in obj_name.split('.') if obj_name else []:
        obj = getattr(obj, part)
    return obj


def get_module_from_obj_name(obj_name):
    """Split `obj_name` into (imported module, attribute path inside it), trying the longest module first.

    Raises ObjectNotFoundError with one sentence saying which part of the name is wrong.
    """
    if not isinstance(obj_name, str) or not obj_name:
        raise ObjectNotFoundError(f'Expected a dotted name such as "training.loss.StyleGAN2Loss", got {obj_name!r}.')
    for short, full in _NAME_SHORTHANDS:
        if obj_name.startswith(short):
            obj_name = full + obj_name[len(short):]

    parts = obj_name.split('.')
    for split in range(len(parts), 0, -1):
        module_name = '.'.join(parts[:split])
        local_name = '.'.join(parts[split:])
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            if _is_missing_module_error(error, module_name):
                continue
            raise
        try:
            get_obj_from_module(module, local_name)
        except AttributeError:
            raise ObjectNotFoundError(
                f'Cannot find "{obj_name}": module "{module_name}" has no attribute "{local_name}"; '
                f'check the spelling of the name in the config.') from None
        return module, local_name
    raise ObjectNotFoundError(
        f'Cannot find "{obj_name}": no module named "{parts[0]}" is importable; '
        f'check the name and that the package is installed or on PYTHONPATH.')


def get_obj_by_name(name):
    """The Python object called `name`, e.g. 'numpy.float32' or 'training.loss.StyleGAN2Loss'."""
    module, local_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, local_name)


def call_func_by_name(*args, func_name=None, **kwargs):
    """Look up the callable `func_name` by dotted name and call it with the remaining arguments."""
    if func_name is None:
        raise ValueError('call_func_by_name() needs func_name="module.function".')
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise TypeError(f'"{func_name}" is a {type(func).__name__}, not a callable; check the name in the config.')
    return func(*args, **kwargs)


def construct_class_by_name(*args, class_name=None, **kwargs):
    """Instantiate the class `class_name` (dotted name) with the remaining arguments."""
    if class_name is None:
        raise ValueError('construct_class_by_name() needs class_name="module.Class".')
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_module_dir_by_obj_name(obj_name):
    """Directory of the source file of the module that defines `obj_name`."""
    module, _ = get_module_from_obj_name(obj_name)
    return os.path.dirname(os.path.abspath(module.__file__))


def is_top_level_function(obj):
    """True for a function defined with `def` at module scope (so it can be found again by name)."""
    return (isinstance(obj, types.FunctionType) and obj.__module__ in sys.modules
            and sys.modules[obj.__module__].__dict__.get(obj.__name__) is obj)


def get_top_level_function_name(obj):
    """'module.function' for a top-level function; scripts run as __main__ are named after their file."""
    if not is_top_level_function(obj):
        raise ValueError(f'{obj!r} is not a function defined at the top level of a module.')
    module = obj.__module__
    if module == '__main__':
        module = os.path.splitext(os.path.basename(sys.modules[module].__file__))[0]
    return f'{module}.{obj.__name__}'


# ------------------------------------------------------------------------------------------------
# Cache directory

_cache_dir_override = None


def set_cache_dir(path):
    """Use `path` instead of $DNNLIB_CACHE_DIR / ~/.cache/dnnlib for the rest of this process."""
    global _cache_dir_override
    _cache_dir_override = path


def make_cache_dir_path(*paths):
    """Path under the dnnlib cache: set_cache_dir(), else $DNNLIB_CACHE_DIR, else ~/.cache/dnnlib."""
    if _cache_dir_override is not None:
        return os.path.join(_cache_dir_override, *paths)
    if os.environ.get('DNNLIB_CACHE_DIR'):
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *paths)
    for home_var in ('HOME', 'USERPROFILE'):
        if os.environ.get(home_var):
            return os.path.join(os.environ[home_var], '.cache', 'dnnlib', *paths)
    import tempfile
    return os.path.join(tempfile.gettempdir(), '.cache', 'dnnlib', *paths)


# ------------------------------------------------------------------------------------------------
# URLs

class DownloadError(OSError):
    """An http(s) download failed after all attempts."""


_URL_SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*://')
_RETRY_DELAY_SECONDS = 1.0  # grows linearly with the attempt number, capped at 10 s
_CHUNK_BYTES = 1 << 20


def is_url(obj, allow_file_urls=False):
    """True for an http(s)-style URL string with a host ('file://' URLs only if allow_file_urls)."""
    if not isinstance(obj, str) or '://' not in obj:
        return False
    if obj.startswith('file://'):
        return allow_file_urls
    try:
        parsed = urllib.parse.urlparse(obj)
    except ValueError:
        return False
    return bool(parsed.scheme) and bool(parsed.hostname)


def _file_url_to_path(url):
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    # 'file:///c:/x.pkl' parses to '/c:/x.pkl', which is not a valid Windows path.
    if re.match(r'^/[a-zA-Z]:', path):
        path = path[1:]
    return path


def _open_local(path, return_filename):
    if not os.path.isfile(path):
        raise FileNotFoundError(f'No such file: "{path}"; check the path (or pass an http(s):// URL).')
    return path if return_filename else open(path, 'rb')


def _download_name(url, response):
    """A readable file name for the cache entry: Content-Disposition's, else the URL's last path part."""
    match = re.search(r'filename="?([^";]+)"?', response.headers.get('Content-Disposition', ''))
    name = match.group(1) if match else os.path.basename(urllib.parse.urlparse(url).path)
    name = re.sub(r'[^0-9a-zA-Z._-]', '_', name or 'download')
    return name[-100:]


def _is_permanent_http_error(error):
    """4xx answers (except timeouts and rate limits) will not change on retry."""
    response = getattr(error, 'response', None)
    status = getattr(response, 'status_code', None)
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def _download_once(session, url, sink, verbose):
    """Stream `url` into the binary file `sink`; returns the response (for headers)."""
    with session.get(url, stream=True, timeout=(30, 120)) as response:
        response.raise_for_status()
        expected = response.headers.get('Content-Length')
        expected = int(expected) if expected and expected.isdigit() else None
        progress = None
        if verbose and expected:
            progress = Progress(total=(expected + 1023) // 1024, desc=f'Downloading {url}', unit='KiB')
        elif verbose:
            print(f'Downloading {url} (size unknown) ...', file=sys.stderr, flush=True)
        received = 0
        try:
            for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                sink.write(chunk)
                if progress is not None:
                    progress.update((received + len(chunk)) // 1024 - received // 1024)
                received += len(chunk)
        finally:
            if progress is not None and received == expected:
                progress.update(progress.total - progress.done)
                progress.close()
        if received == 0:
            raise OSError('the server sent no data')
        if expected is not None and received != expected:
            raise OSError(f'connection closed after {received} of {expected} bytes')
        return response


def open_url(url, cache_dir=None, num_attempts=10, verbose=True, return_filename=False, cache=True):
    """Open a local path, a file:// URL or an http(s) URL as a binary file object (or return its file name).

    http(s) downloads are retried up to `num_attempts` times and cached in
    `cache_dir` (default: make_cache_dir_path('downloads')) under '<md5 of url>_<name>', the same layout
    as StyleGAN2-ADA, so both code bases share one cache. The data is streamed into a temporary file
    that is renamed into place only when complete, so an interrupted download never leaves a
    truncated cache entry. With cache=False the data is kept in memory.
    """
    if num_attempts < 1:
        raise ValueError(f'num_attempts must be at least 1, got {num_attempts}.')
    if return_filename and not cache:
        raise ValueError('open_url(return_filename=True) needs cache=True: without a cache there is no file.')
    if isinstance(url, os.PathLike):
        url = os.fspath(url)

    if not _URL_SCHEME.match(url):
        return _open_local(url, return_filename)
    if url.startswith('file://'):
        return _open_local(_file_url_to_path(url), return_filename)
    if not url.lower().startswith(('http://', 'https://')) or not is_url(url):
        raise ValueError(f'Cannot open "{url}": only local paths, file:// and http(s):// URLs are supported.')

    if cache_dir is None:
        cache_dir = make_cache_dir_path('downloads')
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    if cache:
        cached = sorted(glob.glob(os.path.join(glob.escape(cache_dir), url_md5 + '_*')), key=os.path.getmtime)
        if cached:
            return cached[-1] if return_filename else open(cached[-1], 'rb')
        os.makedirs(cache_dir, exist_ok=True)

    last_error = None
    with requests.Session() as session:
        for attempt in range(1, num_attempts + 1):
            # The 'tmp_' prefix keeps partial files out of the '<md5>_*' cache lookup above.
            temp_path = os.path.join(cache_dir, f'tmp_{uuid.uuid4().hex}_{url_md5}') if cache else None
            sink = open(temp_path, 'wb') if cache else io.BytesIO()  # noqa: SIM115  (closed below; kept on success)
            try:
                try:
                    response = _download_once(session, url, sink, verbose)
                    if cache:
                        sink.flush()
                        os.fsync(sink.fileno())
                finally:
                    if cache:
                        sink.close()
                if not cache:
                    sink.seek(0)
                    return sink
                cache_path = os.path.join(cache_dir, f'{url_md5}_{_download_name(url, response)}')
                os.replace(temp_path, cache_path)
                return cache_path if return_filename else open(cache_path, 'rb')
            except (requests.RequestException, OSError) as error:
                last_error = error
                if cache and os.path.exists(temp_path):
                    os.remove(temp_path)
                if _is_permanent_http_error(error) or attempt == num_attempts:
                    break
                if verbose:
                    print(f'Download of {url} failed ({error}); retrying ({num_attempts - attempt} attempts left).',
                          file=sys.stderr, flush=True)
                time.sleep(min(_RETRY_DELAY_SECONDS * attempt, 10.0))
            except BaseException:
                # Ctrl-C and the like: clean up, then let the interrupt through untouched.
                if cache and os.path.exists(temp_path):
                    os.remove(temp_path)
                raise
    raise DownloadError(f'Could not download {url} ({last_error}); check the URL and the network connection, '
                        f'or download the file yourself and pass its local path.') from last_error


# ------------------------------------------------------------------------------------------------
# Logger


class _TeeStream:
    """Writes to the original stream and to the log file; everything else is the original stream's."""

    def __init__(self, stream, logger):
        self._stream = stream
        self._logger = logger

    def write(self, text):
        if isinstance(text, bytes):
            text = text.decode('utf-8', errors='replace')
        if not text:
            return 0
        self._logger._write_file(text)
        self._stream.write(text)
        if self._logger.should_flush:
            self.flush()
        return len(text)

    def flush(self):
        self._logger._flush_file()
        self._stream.flush()

    def __getattr__(self, name):
        if name in ('_stream', '_logger'):  # not yet set (copy/pickle probing): avoid endless recursion
            raise AttributeError(name)
        # encoding, isatty(), fileno() ... are asked for by click, faulthandler and friends.
        return getattr(self._stream, name)


def _skip_closed_tees(stream):
    while isinstance(stream, _TeeStream) and stream._logger._closed:
        stream = stream._stream
    return stream


class Logger:
    """Tee stdout and stderr into a log file (log.txt of a training run) until close().

    Use as a context manager. With file_name=None nothing is written to disk (non-zero ranks),
    but the streams are still wrapped so the code path is the same. Loggers may be nested; each
    close() restores the streams that were current when it was created.
    """

    def __init__(self, file_name=None, file_mode='w', should_flush=True):
        # Open for the logger's lifetime, closed by close().
        self.file = open(file_name, file_mode, encoding='utf-8') if file_name is not None else None  # noqa: SIM115
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        self._closed = False
        self._tee_stdout = _TeeStream(self.stdout, self)
        self._tee_stderr = _TeeStream(self.stderr, self)
        sys.stdout = self._tee_stdout
        sys.stderr = self._tee_stderr

    def _write_file(self, text):
        if self.file is not None:
            try:
                self.file.write(text)
            except OSError as err:
                self._lose_file(err)

    def _flush_file(self):
        if self.file is not None:
            try:
                self.file.flush()
            except OSError as err:
                self._lose_file(err)

    def _lose_file(self, err):
        """The log file cannot be written (disk full, ...): say so once and keep the terminal output.

        A failing log must not end a run by itself; whatever hit the same full disk (a snapshot)
        reports it with its own message.
        """
        name = getattr(self.file, 'name', 'the log file')
        self.file = None
        self.stderr.write(f'warning: {name} can no longer be written ({err.strerror or err}); '
                          f'the log continues on the terminal only.\n')

    def write(self, text):
        """Write to stdout and the log file (the object itself can stand in for a stream)."""
        return self._tee_stdout.write(text)

    def flush(self):
        self._tee_stdout.flush()
        self.stderr.flush()

    def close(self):
        """Flush, restore sys.stdout / sys.stderr and close the file; safe to call twice."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        # Only undo our own redirection: a logger created later may still be active. If so, our
        # tee stays in its chain as a pass-through until that logger closes and skips over it.
        if sys.stdout is self._tee_stdout:
            sys.stdout = _skip_closed_tees(self.stdout)
        if sys.stderr is self._tee_stderr:
            sys.stderr = _skip_closed_tees(self.stderr)
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass  # the data that could not be written was reported when it was lost
            self.file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False
