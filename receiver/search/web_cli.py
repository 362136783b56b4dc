"""`drain-receiver ui`: the search page on its own listener (127.0.0.1:8081 by default)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from receiver.search.child import start_child
from receiver.secret_file import new_secret, read_secrets, secret_path_from_env, write_secrets

log = logging.getLogger("receiver.ui")

UI_TOKEN_ENV = "DRAIN_UI_TOKEN"
UI_TOKEN_FILE_ENV = "DRAIN_UI_TOKEN_FILE"


def token_path(env: Mapping[str, str]) -> Path:
    configured = env.get(UI_TOKEN_FILE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return secret_path_from_env(env).with_name("drain-ui-token")


def ui_token(env: Mapping[str, str]) -> str:
    """DRAIN_UI_TOKEN, or the token file's (generated, mode 0600, on first start)."""
    given = env.get(UI_TOKEN_ENV, "").strip()
    if given:
        return given
    path = token_path(env)
    found = read_secrets(path)
    if found:
        return found[0]
    token = new_secret()
    write_secrets(path, [token])
    log.warning("no %s was set: generated a UI token into %s (mode 0600); give it to the page",
                UI_TOKEN_ENV, path)
    return token


def main_ui(argv: Sequence[str]) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="drain-receiver ui",
        description="Serve the search page and its JSON API over the receiver's files. "
        f"Every request needs the token: {UI_TOKEN_ENV}, or the file {UI_TOKEN_FILE_ENV} "
        "(default: drain-ui-token beside the drain secret file; generated when missing).")
    parser.add_argument("--dir", type=Path, default=Path(env.get("DRAIN_DIR", "drain-data")),
                        help="the receiver's --dir [env DRAIN_DIR] (default: %(default)s)")
    parser.add_argument("--host", default=env.get("DRAIN_UI_HOST", "127.0.0.1"),
                        help="address to listen on [env DRAIN_UI_HOST] (default: %(default)s)")
    parser.add_argument("--port", type=int, default=int(env.get("DRAIN_UI_PORT", "8081")),
                        help="port to listen on [env DRAIN_UI_PORT] (default: %(default)s)")
    parser.add_argument("--no-compact", action="store_true",
                        default=env.get("DRAIN_UI_COMPACT", "true").lower() in ("0", "false", "no"),
                        help="do not start `drain-receiver compact --watch` beside the page (it gives "
                        "compressed files Parquet twins, so searches are fast) [env DRAIN_UI_COMPACT=false]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.dir.is_dir():
        print(f"drain-receiver ui: {args.dir} is not a directory (give the receiver's --dir)",
              file=sys.stderr)
        return 2
    try:
        token = ui_token(env)
    except OSError as error:
        print(f"drain-receiver ui: cannot read or create the UI token file: {error}. Set "
              f"{UI_TOKEN_ENV} or {UI_TOKEN_FILE_ENV}.", file=sys.stderr)
        return 2
    import uvicorn

    from receiver.search.compact import start_alongside
    from receiver.search.web import create_ui_app

    if not args.no_compact:
        start_alongside(args.dir)

    uvicorn.run(create_ui_app(args.dir, token), host=args.host, port=args.port, log_level="info",
                access_log=False,
                server_header=False)
    return 0


def start_ui_alongside(root: Path) -> subprocess.Popen[bytes]:
    """`--ui` on the receiver: `drain-receiver ui` as a child process, so a search takes its
    own CPU and never holds up the receiver's event loop; stopped when the receiver exits."""
    root.mkdir(parents=True, exist_ok=True)
    return start_child(["ui", "--dir", str(root)], f"search page over {root}")
