"""The local stack's model secret: made once by ``streamproc stack up``, never overwritten.

The learner signs its model snapshots with a shared secret and every worker verifies them with
it (:mod:`streamproc.models.snapshot`). Production sets ``STREAMPROC_MODEL_SECRET``; on a
developer's machine ``stack up`` writes a random one to ``<STREAMPROC_STACK_DIR>/model-secret``
(mode 0600), which the settings use when the variable is unset, so that snapshots, and a
restarted learner that goes on from them, work out of the box.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from streamproc.settings import MODEL_SECRET_FILE

SECRET_BYTES = 32


def ensure_model_secret(stack_dir: Path) -> tuple[Path, bool]:
    """The stack's secret file, made now if missing: ``(path, made)``.

    Written to a private temporary file first and then linked into place, which fails when the
    file exists: a reader never sees a half-written secret, and two ``stack up`` at once keep
    the first one. An existing file is never touched.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> path, made = ensure_model_secret(d)
    >>> made, oct(path.stat().st_mode & 0o777), len(path.read_text().strip())
    (True, '0o600', 64)
    >>> ensure_model_secret(d)[1]
    False
    """
    stack_dir.mkdir(parents=True, exist_ok=True)
    path = stack_dir / MODEL_SECRET_FILE
    if path.exists():
        return path, False
    temporary = stack_dir / f".{MODEL_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
        os.chmod(temporary, 0o600)  # whatever the umask
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path, False
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path, True
