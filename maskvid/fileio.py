"""Small-file I/O for stage directories that may be local paths or bucket URIs (gs://...).

Everything goes through `etils.epath`, which uses the OS for local paths and tf.io.gfile (or
fsspec/gcsfs) for gs://, so `--workdir=gs://bucket/run` works for the JSON, config and picture
files the stages write. Local behaviour is what os/open gave: same names, and writes go to a
temporary name that is renamed into place, so a crash never leaves a half-written file.

Orbax checkpoints, clu/TensorBoard event files and tensorstore reach gs:// on their own. The
ArrayRecord shards (rendered data, latent cache) do not: `require_local` stops such a run early.
"""
import contextlib
import json
import os
import socket
import tempfile
from typing import Any, Iterator

from etils import epath

PathLike = str | os.PathLike


def path(p: PathLike) -> epath.Path:
  return epath.Path(p)


def is_uri(p: PathLike) -> bool:
  """True for scheme://... paths (gs://, s3://, ...), which os and open() cannot handle."""
  return '://' in os.fspath(p)


def absolute(p: PathLike) -> str:
  """os.path.abspath for local paths; URIs unchanged (abspath would make gs://b into CWD/gs:/b)."""
  p = os.fspath(p)
  return p if is_uri(p) else os.path.abspath(p)


def makedirs(p: PathLike) -> None:
  path(p).mkdir(parents=True, exist_ok=True)


def require_local(p: PathLike, config_key: str) -> None:
  """Raises ValueError if `p` is a URI: array_record opens files with POSIX open() only.

  Args:
    p: a data or latent-cache directory.
    config_key: the config entry that sets it (e.g. 'paths.data'), named in the message.
  """
  if is_uri(p):
    raise ValueError(
        f'{p!r} ({config_key}) is a bucket URI, but its ArrayRecord shards are read and written '
        'with local file I/O (array_record cannot open gs:// paths). Put it on a local disk or a '
        f'gcsfuse mount, e.g. --config.{config_key}=/gcs/BUCKET/run/{os.path.basename(p)} '
        f'(the other stage dirs may stay on gs://).')


def _tmp_name(p: epath.Path) -> epath.Path:
  # Host and pid: several hosts may write the same file into one shared directory.
  return p.parent / f'.{p.name}.tmp-{socket.gethostname()}-{os.getpid()}'


def write_bytes_atomic(p: PathLike, data: bytes) -> None:
  """Writes `data` to `p`; readers see the old file or the whole new one, never a part."""
  p = path(p)
  if is_uri(p):
    # A bucket object becomes visible only once its upload is complete; a rename there would
    # be a second full copy.
    p.write_bytes(data)
    return
  tmp = _tmp_name(p)
  try:
    tmp.write_bytes(data)
    tmp.replace(p)
  finally:
    tmp.unlink(missing_ok=True)


def write_text_atomic(p: PathLike, text: str) -> None:
  write_bytes_atomic(p, text.encode('utf-8'))


def write_json_atomic(p: PathLike, obj: Any, indent: int | None = 2) -> None:
  write_text_atomic(p, json.dumps(obj, indent=indent))


def read_json(p: PathLike) -> Any:
  return json.loads(path(p).read_text())


@contextlib.contextmanager
def local_output(p: PathLike) -> Iterator[str]:
  """A local file name to write `p` through, for libraries that only write by name (PIL, ffmpeg).

  Yields a temporary path with `p`'s suffix; when the block succeeds its bytes land atomically
  at `p` (local or URI), otherwise nothing is written.
  """
  p = path(p)
  fd, tmp = tempfile.mkstemp(prefix=f'.{p.stem}.', suffix=p.suffix,
                             dir=None if is_uri(p) else os.fspath(p.parent))
  os.close(fd)
  try:
    yield tmp
    if is_uri(p):
      write_bytes_atomic(p, epath.Path(tmp).read_bytes())
    else:
      os.replace(tmp, p)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_image(p: PathLike, image) -> None:
  """uint8 [H, W, 3] (or [H, W]) -> PNG (or the format `p`'s suffix names), atomically."""
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  write_bytes_atomic(p, iio.imwrite('<bytes>', image, extension=path(p).suffix or '.png'))
