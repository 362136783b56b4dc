"""Where the receiver's time goes: py-spy samples it under wrk load, then we summarise the stacks.

    python bench/profiling.py [--seconds 20]    # prints the tables; writes /tmp/drain-bench/...

py-spy (`pip install py-spy`) samples the server process from outside (--nonblocking, so it does
not pause it) and writes collapsed stacks; a flame graph (SVG) is recorded right after.
Percentages are of the samples in which the server was running Python or native code on CPU
(idle waits in the event loop's `select` are counted separately as "idle").
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen
import harness

# (category, pattern on "function (file)") from the most specific; a sample goes to the first
# category matched by its deepest (innermost) frame that matches any category.
CATEGORIES: list[tuple[str, str]] = [
    ("rotated-file gzip (background thread)", r"_compress \(|GzipFile"),
    ("HMAC-SHA1 verify", r"signature_matches|/hmac\.py|hashlib"),
    ("gzip inflate", r"gunzip|zlib|/gzip\.py"),
    ("JSON validate/split (simdjson, msgspec)", r"receiver/decode\.py|msgspec|simdjson"),
    ("sink write (os.write)", r"write_all|write_batch|sinks/"),
    ("HTTP (uvicorn's httptools protocol)", r"h11/|h11_impl|httptools|receiver/server\.py"),
    ("response building", r"json_response|responses\.py|orjson"),
    ("Starlette routing/request", r"starlette/"),
    ("event loop (uvloop, asyncio)", r"asyncio/|selectors|uvloop"),
    ("logging", r"logging/"),
]


@dataclass
class Profile:
    samples: int = 0
    idle: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    loop_categories: Counter[str] = field(default_factory=Counter)  # event-loop thread only
    background: Counter[str] = field(default_factory=Counter)  # other threads, by leaf
    svg: Path | None = None
    raw: Path | None = None
    error: str = ""


def _name(frame: str) -> str:
    """`func (path/to/mod.py:123)` -> `func (mod.py)`; keeps the package for site-packages."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({short})"


def summarise(collapsed: str) -> Profile:
    prof = Profile()
    patterns = [(name, re.compile(p)) for name, p in CATEGORIES]
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        leaf = frames[-1]
        if re.match(r"(select|poll) \(.*selectors\.py\)$", leaf):
            prof.idle += count
            continue
        prof.samples += count
        prof.self_time[leaf] += count
        for name in set(frames):
            prof.inclusive[name] += count
        category = "other"
        for frame in reversed(frames):
            hit = next((name for name, pat in patterns if pat.search(frame)), None)
            if hit:
                category = hit
                break
        prof.categories[category] += count
        if any(f.startswith("Thread._bootstrap (") for f in frames):
            prof.background[leaf] += count
        else:
            prof.loop_categories[category] += count
    return prof


def profile_receiver(set_dir: Path, work: Path, seconds: float,
                     receiver_args: tuple[str, ...] = ()) -> Profile:
    """Run the receiver (file sink) under NDJSON load and sample it with py-spy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return Profile(error="py-spy not installed (pip install py-spy)")
    out_dir = work / "profile"
    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "data").mkdir(parents=True)
    port = harness.free_port()
    sc = harness.Scenario("profile", "receiver", gen.BodySpec("ndjson", 100, 1),
                          receiver_args=receiver_args)
    cmd, env = harness.server_command(sc, port, out_dir, [])
    with (out_dir / "stderr.log").open("wb") as err, (out_dir / "stdout.log").open("wb") as out:
        server = subprocess.Popen(["taskset", "-c", harness.SERVER_CPUS, *cmd],
                                  cwd=harness.SOURCE["dir"], env=env, stdout=out, stderr=err)
    prof = Profile()
    try:
        if not harness.wait_ready(port, server):
            return Profile(error="receiver did not start")
        url = f"http://127.0.0.1:{port}/"
        load = threading.Thread(
            target=harness.run_wrk, args=(url, set_dir, seconds * 1.6 + 3, 16, False), daemon=True)
        load.start()
        raw = out_dir / "profile.txt"
        svg = out_dir / "profile.svg"
        pin = ["taskset", "-c", harness.LOAD_CPUS]
        subprocess.run([*pin, spy, "record", "--nonblocking", "--pid", str(server.pid),
                        "--duration", str(round(seconds)), "--format", "raw", "-o", str(raw)],
                       check=True, capture_output=True, timeout=seconds + 60)
        subprocess.run([*pin, spy, "record", "--nonblocking", "--pid", str(server.pid),
                        "--duration", str(max(1, round(seconds / 2))), "-o", str(svg)],
                       check=False, capture_output=True, timeout=seconds + 60)
        load.join(timeout=seconds * 2 + 60)
        prof = summarise(raw.read_text())
        prof.raw, prof.svg = raw, svg if svg.exists() else None
    except (subprocess.CalledProcessError, OSError) as error:
        detail = getattr(error, "stderr", b"") or b""
        prof = Profile(error=f"py-spy failed: {error} {detail.decode(errors='replace')[-300:]}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(out_dir / "data", ignore_errors=True)
    return prof


def render(prof: Profile, top: int = 15) -> str:
    if prof.error:
        return f"(profile not taken: {prof.error})\n"
    total = prof.samples or 1
    busy = prof.samples / max(1, prof.samples + prof.idle) * 100
    lines = [f"{prof.samples} on-CPU samples (server busy in {busy:.0f}% of samples; "
             f"raw stacks: `{prof.raw}`, flame graph: `{prof.svg}`).", "",
             "| where (innermost matching frame) | share of samples |", "| --- | ---: |"]
    for name, n in prof.categories.most_common():
        lines.append(f"| {name} | {n / total * 100:.1f}% |")
    loop_total = sum(prof.loop_categories.values()) or 1
    bg_total = sum(prof.background.values())
    lines += ["", f"Event-loop thread alone ({loop_total / total * 100:.0f}% of samples; the rest "
              f"are background threads, {bg_total / total * 100:.0f}%: "
              + ", ".join(f"`{k}` {v / total * 100:.0f}%" for k, v in prof.background.most_common(3))
              + "):", "", "| where | share of event-loop thread |", "| --- | ---: |"]
    for name, n in prof.loop_categories.most_common():
        lines.append(f"| {name} | {n / loop_total * 100:.1f}% |")
    lines += ["", f"Top {top} functions by self time:", "",
              "| function | self | inclusive |", "| --- | ---: | ---: |"]
    for name, n in prof.self_time.most_common(top):
        lines.append(f"| `{name}` | {n / total * 100:.1f}% | "
                     f"{prof.inclusive[name] / total * 100:.1f}% |")
    lines += ["", "The receiver's own functions by inclusive time (what each costs with all it calls):",
              "", "| function | inclusive |", "| --- | ---: |"]
    own = [(k, v) for k, v in prof.inclusive.most_common()
           if re.search(r"\((receiver|sinks)/", k) and not k.startswith(("<module>", "main ("))]
    for name, n in own[:top]:
        lines.append(f"| `{name}` | {n / total * 100:.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=100, choices=(1, 100, 1000))
    parser.add_argument("--format", default="ndjson", choices=("ndjson", "array"))
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--receiver-args", default="", help="extra receiver flags, one string")
    parser.add_argument("--work", type=Path, default=Path("/tmp/drain-bench"))
    args = parser.parse_args()
    bodies = {1: 2000, 100: 256, 1000: 32}[args.batch]
    spec = gen.BodySpec(args.format, args.batch, bodies, args.gzip)
    set_dir = gen.build_set(spec, args.work / "bodies")
    harness.use_receiver_ref("HEAD", args.work)
    print(render(profile_receiver(set_dir, args.work / "runs", args.seconds,
                                  tuple(args.receiver_args.split()))))


if __name__ == "__main__":
    main()
