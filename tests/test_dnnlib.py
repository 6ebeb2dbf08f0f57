"""dnnlib: EasyDict, objects by name, cache paths, open_url (against a local HTTP server), Logger."""

import copy
import hashlib
import http.server
import io
import os
import pickle
import sys
import threading
import urllib.parse

import pytest

import dnnlib
import dnnlib.progress
from dnnlib import util

# ------------------------------------------------------------------------------------------------
# EasyDict


def test_easydict_attribute_and_item_access_are_the_same():
    d = dnnlib.EasyDict(lr=0.002)
    d.batch = 32
    assert d['batch'] == 32 and d.lr == 0.002
    del d.lr
    assert dict(d) == {'batch': 32}


def test_easydict_missing_attribute_is_an_attribute_error():
    d = dnnlib.EasyDict()
    assert not hasattr(d, 'missing')
    with pytest.raises(AttributeError):
        del d.missing


def test_easydict_pickles_and_deep_copies_as_itself():
    d = dnnlib.EasyDict(inner=dnnlib.EasyDict(x=[1, 2]))
    for clone in (pickle.loads(pickle.dumps(d)), copy.deepcopy(d)):
        assert type(clone) is dnnlib.EasyDict and type(clone.inner) is dnnlib.EasyDict
        assert clone == d
        clone.inner.x.append(3)
        assert d.inner.x == [1, 2]
    assert b'dnnlib.util' in pickle.dumps(d) and b'EasyDict' in pickle.dumps(d)  # the official class path


def test_package_exports():
    assert dnnlib.EasyDict is util.EasyDict and dnnlib.make_cache_dir_path is util.make_cache_dir_path
    assert dnnlib.util is util
    assert util.format_time is dnnlib.progress.format_time


# ------------------------------------------------------------------------------------------------
# Objects by name


def test_get_obj_by_name_resolves_modules_classes_and_nested_attributes():
    import collections
    import os.path
    assert util.get_obj_by_name('collections.OrderedDict') is collections.OrderedDict
    assert util.get_obj_by_name('os.path.join') is os.path.join
    assert util.get_obj_by_name('collections.OrderedDict.fromkeys') == collections.OrderedDict.fromkeys
    assert util.get_obj_by_name('os.path') is os.path


def test_get_module_from_obj_name_prefers_the_longest_module():
    import os.path
    module, local = util.get_module_from_obj_name('os.path.join')
    assert module is os.path and local == 'join'


def test_numpy_shorthand():
    import numpy as np
    assert util.get_obj_by_name('np.float32') is np.float32


def test_call_and_construct_by_name():
    assert util.call_func_by_name(3, 4, func_name='math.hypot') == 5.0
    obj = util.construct_class_by_name([('a', 1)], class_name='collections.OrderedDict', b=2)
    assert list(obj.items()) == [('a', 1), ('b', 2)]


def test_missing_attribute_names_module_and_attribute():
    with pytest.raises(util.ObjectNotFoundError, match='module "collections" has no attribute "NoSuchDict"'):
        util.construct_class_by_name(class_name='collections.NoSuchDict')


def test_missing_module_is_named():
    with pytest.raises(util.ObjectNotFoundError, match='no module named "no_such_pkg_xyz"'):
        util.get_obj_by_name('no_such_pkg_xyz.sub.Thing')


def test_import_error_inside_an_existing_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / 'dnnlib_test_broken_mod.py').write_text('import no_such_dependency_xyz\nclass Thing: pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        util.get_obj_by_name('dnnlib_test_broken_mod.Thing')
    assert info.value.name == 'no_such_dependency_xyz'
    sys.modules.pop('dnnlib_test_broken_mod', None)


def test_non_callable_name_is_rejected():
    with pytest.raises(TypeError, match='not a callable'):
        util.call_func_by_name(func_name='math.pi')


def test_top_level_function_name():
    assert util.get_top_level_function_name(util.get_obj_by_name) == 'dnnlib.util.get_obj_by_name'
    assert not util.is_top_level_function(lambda: None)


# ------------------------------------------------------------------------------------------------
# Cache directory and URLs


def test_cache_dir_from_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.setattr(util, '_cache_dir_override', None)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'env'))
    assert util.make_cache_dir_path('downloads') == os.path.join(str(tmp_path / 'env'), 'downloads')
    monkeypatch.delenv('DNNLIB_CACHE_DIR')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert util.make_cache_dir_path('a', 'b') == os.path.join(str(tmp_path / 'home'), '.cache', 'dnnlib', 'a', 'b')
    util.set_cache_dir(str(tmp_path / 'forced'))
    assert util.make_cache_dir_path('x') == os.path.join(str(tmp_path / 'forced'), 'x')


@pytest.mark.parametrize('text, allow_file, expected', [
    ('https://example.com/a.pkl', False, True),
    ('http://127.0.0.1:8000/x', False, True),
    ('http://localhost/x', False, True),
    ('file:///tmp/x.pkl', False, False),
    ('file:///tmp/x.pkl', True, True),
    ('/tmp/x.pkl', False, False),
    ('https://', False, False),
    (42, False, False),
])
def test_is_url(text, allow_file, expected):
    assert util.is_url(text, allow_file_urls=allow_file) is expected


def test_open_url_local_path_and_file_url(tmp_path):
    path = tmp_path / 'with space.bin'
    path.write_bytes(b'local bytes')
    with util.open_url(str(path)) as f:
        assert f.read() == b'local bytes'
    file_url = 'file://' + urllib.parse.quote(str(path))
    with util.open_url(file_url) as f:
        assert f.read() == b'local bytes'
    assert util.open_url(file_url, return_filename=True) == str(path)
    assert util.open_url(path, return_filename=True) == str(path)  # os.PathLike


def test_open_url_missing_local_file_is_one_clear_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match='No such file: ".*nothing.pkl"; check the path'):
        util.open_url(str(tmp_path / 'nothing.pkl'))


def test_open_url_rejects_unknown_scheme_and_filename_without_cache():
    with pytest.raises(ValueError, match='only local paths, file:// and http'):
        util.open_url('ftp://example.com/x')
    with pytest.raises(ValueError, match='needs cache=True'):
        util.open_url('https://example.com/x', return_filename=True, cache=False)


PAYLOAD = bytes(range(256)) * 64


REQUESTS_SEEN = []  # paths the test server was asked for


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        REQUESTS_SEEN.append(self.path)
        if self.path == '/data.bin':
            self.send_response(200)
            self.send_header('Content-Length', str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == '/named':
            self.send_response(200)
            self.send_header('Content-Length', '5')
            self.send_header('Content-Disposition', 'attachment; filename="net work.pkl"')
            self.end_headers()
            self.wfile.write(b'named')
        elif self.path == '/truncated.bin':
            self.send_response(200)
            self.send_header('Content-Length', str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:100])
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(monkeypatch):
    for var in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    monkeypatch.setattr(util, '_RETRY_DELAY_SECONDS', 0.0)
    REQUESTS_SEEN.clear()
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base_url = f'http://127.0.0.1:{server.server_address[1]}'
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_download_is_cached_and_reused_without_the_server(http_server, tmp_path):
    cache_dir = str(tmp_path / 'cache')
    url = http_server.base_url + '/data.bin'
    with util.open_url(url, cache_dir=cache_dir, verbose=False) as f:
        assert f.read() == PAYLOAD
    md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    assert os.listdir(cache_dir) == [f'{md5}_data.bin']

    http_server.shutdown()
    http_server.server_close()
    path = util.open_url(url, cache_dir=cache_dir, return_filename=True, num_attempts=1, verbose=False)
    assert path == os.path.join(cache_dir, f'{md5}_data.bin')
    with util.open_url(url, cache_dir=cache_dir, num_attempts=1, verbose=False) as f:
        assert f.read() == PAYLOAD
    assert REQUESTS_SEEN == ['/data.bin']


def test_http_download_uses_content_disposition_name(http_server, tmp_path):
    url = http_server.base_url + '/named'
    path = util.open_url(url, cache_dir=str(tmp_path), return_filename=True, verbose=False)
    assert path.endswith('_net_work.pkl')
    with open(path, 'rb') as f:
        assert f.read() == b'named'


def test_http_without_cache_returns_memory_file_and_writes_nothing(http_server, tmp_path):
    f = util.open_url(http_server.base_url + '/data.bin', cache_dir=str(tmp_path / 'c'), cache=False, verbose=False)
    assert isinstance(f, io.BytesIO) and f.read() == PAYLOAD
    assert not os.path.exists(tmp_path / 'c')


def test_truncated_download_is_retried_then_fails_without_cache_entry(http_server, tmp_path):
    cache_dir = tmp_path / 'cache'
    with pytest.raises(util.DownloadError, match='Could not download .*truncated.bin'):
        util.open_url(http_server.base_url + '/truncated.bin', cache_dir=str(cache_dir), num_attempts=3,
                      verbose=False)
    assert REQUESTS_SEEN == ['/truncated.bin'] * 3
    assert os.listdir(cache_dir) == []


def test_missing_url_fails_at_once(http_server, tmp_path):
    with pytest.raises(util.DownloadError, match='404'):
        util.open_url(http_server.base_url + '/nope', cache_dir=str(tmp_path), num_attempts=5, verbose=False)
    assert REQUESTS_SEEN == ['/nope']


def test_interrupted_download_leaves_no_file(http_server, tmp_path, monkeypatch):
    def write_half_then_interrupt(session, url, sink, verbose):
        sink.write(PAYLOAD[:1000])
        raise KeyboardInterrupt

    monkeypatch.setattr(util, '_download_once', write_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        util.open_url(http_server.base_url + '/data.bin', cache_dir=str(tmp_path), verbose=False)
    assert os.listdir(tmp_path) == []


def test_verbose_download_prints_progress_to_stderr(http_server, tmp_path, capsys):
    util.open_url(http_server.base_url + '/data.bin', cache_dir=str(tmp_path), verbose=True).close()
    captured = capsys.readouterr()
    assert 'Downloading http://127.0.0.1' in captured.err and '16/16' in captured.err
    assert captured.out == ''


# ------------------------------------------------------------------------------------------------
# Logger


def test_logger_tees_stdout_and_stderr_and_restores_them(tmp_path, capsys):
    log_path = tmp_path / 'log.txt'
    before_out, before_err = sys.stdout, sys.stderr
    with util.Logger(str(log_path)):
        print('to stdout')
        print('to stderr', file=sys.stderr)
    assert sys.stdout is before_out and sys.stderr is before_err
    print('after close')
    assert log_path.read_text() == 'to stdout\nto stderr\n'
    captured = capsys.readouterr()
    assert captured.out == 'to stdout\nafter close\n' and captured.err == 'to stderr\n'


def test_logger_append_mode_and_no_file(tmp_path, capsys):
    log_path = tmp_path / 'log.txt'
    log_path.write_text('old\n')
    with util.Logger(str(log_path), file_mode='a'):
        print('new')
    with util.Logger(None):
        print('screen only')
    assert log_path.read_text() == 'old\nnew\n'
    assert capsys.readouterr().out == 'new\nscreen only\n'


def test_nested_loggers_close_out_of_order(tmp_path):
    before = sys.stdout
    outer = util.Logger(str(tmp_path / 'outer.txt'))
    inner = util.Logger(str(tmp_path / 'inner.txt'))
    print('both')
    outer.close()  # must not tear down the inner logger's redirection
    print('inner only')
    inner.close()
    assert sys.stdout is before
    assert (tmp_path / 'outer.txt').read_text() == 'both\n'
    assert (tmp_path / 'inner.txt').read_text() == 'both\ninner only\n'


def test_logger_stream_forwards_stream_attributes(tmp_path):
    with util.Logger(str(tmp_path / 'log.txt')) as logger:
        assert sys.stdout.encoding == logger.stdout.encoding
        assert sys.stdout.isatty() == logger.stdout.isatty()
