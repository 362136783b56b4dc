"""The drain secret file: where `register.py` writes secrets and the receiver reads them.

One secret a line; blank lines and lines starting with `#` are ignored; every secret listed is
accepted, so a rotation writes the new secret first and keeps the old ones below it. The file is
created with mode 0600 and always replaced atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from receiver.durable import fsync_directory

log = logging.getLogger("receiver.secrets")

SECRET_FILE_ENV = "DRAIN_SECRET_FILE"
VERIFY_FILE_ENV = "DRAIN_VERIFY_FILE"
VERIFY_FILE_NAME = "drain-verify"
SECRET_ALPHABET = "A-Za-z0-9_-"
SECRET_BYTES = 32  # token_urlsafe(32) gives 43 characters of SECRET_ALPHABET


def default_secret_path() -> Path:
    """`$XDG_CONFIG_HOME/vercel-drain-receiver/drain-secret` (`~/.config/...` when unset)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "vercel-drain-receiver" / "drain-secret"


def secret_path_from_env(env: Mapping[str, str] | None = None) -> Path:
    """The secret file named by `DRAIN_SECRET_FILE`, or the default path."""
    configured = (os.environ if env is None else env).get(SECRET_FILE_ENV, "").strip()
    return Path(configured).expanduser() if configured else default_secret_path()


def verify_path_from_env(env: Mapping[str, str] | None = None) -> Path:
    """The file holding the `x-vercel-verify` code: `DRAIN_VERIFY_FILE`, by default
    `drain-verify` beside the secret file. It holds the code on its first non-comment line."""
    configured = (os.environ if env is None else env).get(VERIFY_FILE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return secret_path_from_env(env).with_name(VERIFY_FILE_NAME)


def new_secret() -> str:
    """A strong secret: 43 characters of `[A-Za-z0-9_-]`, valid for every Vercel drain API."""
    return secrets.token_urlsafe(SECRET_BYTES)


def parse_secrets(text: str) -> list[str]:
    """The secrets listed in a secret file's text, in order, without duplicates."""
    found: list[str] = []
    for line in text.splitlines():
        secret = line.strip()
        if secret and not secret.startswith("#") and secret not in found:
            found.append(secret)
    return found


def read_secrets(path: Path) -> list[str]:
    """The secrets in `path`; an empty list when the file does not exist."""
    try:
        return parse_secrets(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []


def write_secrets(path: Path, secret_list: Iterable[str]) -> None:
    """Replace `path` atomically with these secrets, one a line, mode 0600."""
    write_private_file(path, "".join(f"{secret}\n" for secret in secret_list))


def write_private_file(path: Path, content: str) -> None:
    """Replace `path` atomically with `content`, mode 0600.

    The parent directory is created (mode 0700) when missing. The content is written to a
    temporary file in the same directory, fsynced, then renamed over `path`, so a process that
    re-reads the file sees either the old content or the new one, never half of it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def prepend_secret(path: Path, secret: str) -> list[str]:
    """Put `secret` first in the file, keeping the secrets already there; returns the new list."""
    updated = [secret, *(old for old in read_secrets(path) if old != secret)]
    write_secrets(path, updated)
    return updated



@dataclass
class WatchedLines:
    """The entries of a secret-style file, re-read whenever the file changes.

    One `stat` per call tells whether the file changed (inode, size, mtime, ctime), so a rotation
    or a fresh verification code takes effect on the next request, without a restart (for a
    caller passing `max_age`, within that many seconds). When the file disappears or cannot be
    read, the entries last read stay in force.
    """

    path: Path
    _stamp: tuple[int, ...] | None = field(default=None, init=False)
    _entries: tuple[str, ...] = field(default=(), init=False)
    _checked: float = field(default=-math.inf, init=False)

    def current(self, max_age: float = 0.0) -> tuple[str, ...]:
        """The entries; with `max_age`, those of a check at most that many seconds old."""
        now = time.monotonic()
        if now - self._checked < max_age:
            return self._entries
        self._checked = now
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None:
                log.warning("%s disappeared; keeping the %d entries read before",
                            self.path, len(self._entries))
                self._stamp = None
            return self._entries
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._entries = tuple(read_secrets(self.path))
            except (OSError, UnicodeDecodeError) as error:
                log.error("cannot read %s (keeping the entries read before): %s", self.path, error)
            else:
                log.info("read %d entries from %s", len(self._entries), self.path)
        return self._entries
