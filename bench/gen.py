"""Deterministic generator of realistic Vercel log-drain records and signed request bodies.

Records follow the README's "Protocol" section (Records): every `source`, with and without
`proxy`, short lines, embedded JSON in `message`, multi-line stack traces, unicode, and now and
then a multi-KB message. The same seed always gives the same bytes.

A *body set* is a directory of request bodies plus `index.tsv` (read by `drain.lua`: file,
content-type, content-encoding, signature) and `manifest.json` (read by the verifier: the ids of
every body, in order). Every record id in a set is unique, so a verifier can match the records
written against the batches acknowledged.

    python bench/gen.py --out /tmp/bodies --format ndjson --batch 100 --bodies 8
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import hmac
import json
import random
from dataclasses import dataclass
from pathlib import Path

BENCH_SECRET = "bench-secret-6f1c2a9d4e7b8a3c5d0e1f2a3b4c5d6e7f8a9b0c1d"

SOURCES = ("build", "edge", "lambda", "static", "external", "firewall", "redirect")
SOURCE_WEIGHTS = (8, 12, 40, 20, 6, 6, 8)
REGIONS = ("iad1", "sfo1", "fra1", "hnd1", "gru1", "syd1", "cdg1", "bom1")
METHODS = ("GET", "GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS")
USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "vercel-screenshot/1.0",
)
PATHS = (
    "/", "/api/users", "/api/orders/{n}", "/blog/{slug}", "/_next/static/chunks/{hex}.js",
    "/_next/image?url=%2Fimg%2F{slug}.png&w=1080&q=75", "/docs/{slug}#install", "/favicon.ico",
    "/api/search?q={word}&page={n}", "/products/{slug}?ref=homepage", "/robots.txt",
)
WORDS = (
    "alpha", "deploy", "cache", "edge", "region", "checkout", "cart", "invoice", "user",
    "session", "token", "preview", "build", "route", "render", "stream", "webhook", "cron",
)
UNICODE_SNIPPETS = (
    "café ☕ crème brûlée", "東京で処理されました", "Ошибка соединения", "مرحبا بالعالم",
    "emoji 🚀🔥✅ ok", "Zürich → São Paulo", "ελληνικά κείμενα", "한국어 로그 메시지",
    "naïve façade résumé", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral plane 🧪",  # noqa: RUF001 (astral-plane letters on purpose)
)
BUILD_LINES = (
    "Cloning github.com/acme/{word}-web (Branch: main, Commit: {hex})",
    "Running \"vercel build\"",
    "Vercel CLI 34.2.0",
    "Installing dependencies...",
    "added 1342 packages in 21s",
    "▲ Next.js 14.2.3",
    "Creating an optimized production build ...",
    "✓ Compiled successfully",
    "Route (app)                              Size     First Load JS",
    "├ ○ /{word}                               {n} kB         {n} kB",
    "Build Completed in /vercel/output [{n}s]",
    "Deploying outputs...",
    "warning: package.json: No license field",
)


@dataclass(frozen=True)
class BodySpec:
    """One body set: the records, how they are framed, and whether they are gzipped."""

    fmt: str  # "ndjson" | "array"
    batch: int  # records per body; 0 means "fill to target_bytes"
    bodies: int
    gzip: bool = False
    target_bytes: int = 0  # with batch == 0: records are added until the body reaches this
    seed: int = 20240501

    @property
    def key(self) -> str:
        size = f"b{self.batch}" if self.batch else f"t{self.target_bytes}"
        gz = "-gz" if self.gzip else ""
        return f"{self.fmt}{gz}-{size}-n{self.bodies}-s{self.seed}"


class RecordFactory:
    """Makes one record after another from a seeded RNG; ids are unique and numeric-looking."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.id_prefix = str(1_700_000 + seed % 100_000)
        self.counter = 0
        self.clock_ms = 1_714_560_000_000 + seed % 1000
        self.projects = [self._hex(24) for _ in range(4)]
        self.deployments = [f"dpl_{self._b62(28)}" for _ in range(6)]

    def _hex(self, n: int) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def _b62(self, n: int) -> str:
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def _fill(self, template: str) -> str:
        r = self.rng
        return (
            template.replace("{n}", str(r.randint(1, 9999)))
            .replace("{slug}", f"{r.choice(WORDS)}-{r.choice(WORDS)}")
            .replace("{word}", r.choice(WORDS))
            .replace("{hex}", self._hex(8))
        )

    def _path(self) -> str:
        return self._fill(self.rng.choice(PATHS))

    def _stack_trace(self) -> str:
        r = self.rng
        frames = "\n".join(
            f"    at {r.choice(WORDS)}{r.choice(('Handler', 'Service', 'Query', ''))} "
            f"(/var/task/.next/server/chunks/{r.randint(100, 999)}.js:{r.randint(1, 400)}:"
            f"{r.randint(1, 80)})"
            for _ in range(r.randint(4, 14))
        )
        kind = r.choice(("TypeError", "Error", "RangeError", "PrismaClientKnownRequestError"))
        detail = r.choice((
            "Cannot read properties of undefined (reading 'id')",
            "connect ECONNREFUSED 10.0.3.7:5432",
            f"Invalid `prisma.{r.choice(WORDS)}.findUnique()` invocation",
            "Maximum call stack size exceeded",
        ))
        return f"{kind}: {detail}\n{frames}"

    def _embedded_json(self) -> str:
        r = self.rng
        payload = {
            "level": r.choice(("info", "warn", "error", "debug")),
            "msg": f"{r.choice(WORDS)} {r.choice(WORDS)} completed",
            "userId": f"usr_{self._b62(12)}",
            "durationMs": round(r.uniform(0.2, 900.0), 3),
            "tags": [r.choice(WORDS) for _ in range(r.randint(0, 4))],
            "ctx": {"region": r.choice(REGIONS), "cold": r.random() < 0.1, "note": None},
        }
        if r.random() < 0.3:
            payload["text"] = r.choice(UNICODE_SNIPPETS)
        return json.dumps(payload, ensure_ascii=r.random() < 0.5)

    def _message(self, source: str) -> str | None:
        r = self.rng
        roll = r.random()
        if roll < 0.015:  # the odd multi-KB message: a dumped payload or a long HTML page
            size = r.choice((2_000, 4_000, 8_000, 16_000, 48_000))
            chunk = f"{r.choice(UNICODE_SNIPPETS)} {self._hex(32)} <div class=\"row\">x</div> "
            return ("LARGE " + chunk * (size // len(chunk) + 1))[:size]
        if source == "build":
            return self._fill(r.choice(BUILD_LINES))
        if source in ("static", "redirect") and roll < 0.7:
            return None
        if source == "firewall":
            return r.choice(("Request blocked by WAF rule", "Rate limit exceeded", "challenge"))
        if roll < 0.10:
            return self._stack_trace()
        if roll < 0.35:
            return self._embedded_json()
        if roll < 0.45:
            return f"{r.choice(UNICODE_SNIPPETS)} ({r.choice(WORDS)})"
        if roll < 0.75:
            return f"{r.choice(('GET', 'POST'))} {self._path()} {r.choice((200, 201, 304, 404))}"
        return self._fill(
            r.choice((
                "START RequestId: {hex}-{hex} Version: $LATEST",
                "END RequestId: {hex}",
                "REPORT Duration: {n}.12 ms Billed Duration: {n} ms Memory Size: 1024 MB",
                "cache miss for key {word}:{n}",
                "ok",
            ))
        )

    def _proxy(self, source: str, ts: int) -> dict[str, object]:
        r = self.rng
        host = f"{r.choice(WORDS)}-{r.choice(WORDS)}.vercel.app"
        proxy: dict[str, object] = {
            "timestamp": ts - r.randint(0, 50),
            "method": r.choice(METHODS),
            "host": host,
            "path": self._path(),
            "userAgent": [r.choice(USER_AGENTS)],
            "region": r.choice(REGIONS),
        }
        optional: dict[str, object] = {
            "referer": f"https://{host}/{r.choice(WORDS)}",
            "statusCode": r.choice((200, 200, 200, 304, 404, 500)),
            "clientIp": f"{r.randint(1, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
            "scheme": "https",
            "responseByteSize": r.randint(0, 250_000),
            "cacheId": self._b62(20),
            "pathType": r.choice(("func", "static", "prerender", "streaming_func", "api")),
            "pathTypeVariant": r.choice(("api", "page", "")),
            "vercelId": f"{r.choice(REGIONS)}::{self._b62(5)}-{ts}-{self._hex(12)}",
            "lambdaRegion": r.choice(REGIONS),
            "vercelCache": r.choice(("MISS", "HIT", "STALE", "BYPASS", "PRERENDER", "REVALIDATED")),
        }
        for key, value in optional.items():
            if r.random() < 0.6:
                proxy[key] = value
        if source == "firewall":
            proxy["wafAction"] = r.choice(("deny", "challenge", "log", "rate_limit"))
            proxy["wafRuleId"] = f"rule_{self._b62(8)}"
        return proxy

    def record(self) -> dict[str, object]:
        r = self.rng
        self.counter += 1
        self.clock_ms += r.randint(0, 40)
        source = r.choices(SOURCES, SOURCE_WEIGHTS)[0]
        rec: dict[str, object] = {"id": f"{self.id_prefix}{self.counter:012d}"}
        message = self._message(source)
        if message is not None:
            rec["message"] = message
        rec["timestamp"] = self.clock_ms
        rec["type"] = {
            "build": r.choice(("command", "stdout", "stderr", "deployment-state", "delimiter")),
            "edge": r.choice(("middleware-invocation", "edge-function-invocation", "stdout")),
            "lambda": r.choice(("stdout", "stderr", "stdout", "report")),
        }.get(source, "stdout")
        rec["source"] = source
        rec["projectId"] = f"prj_{r.choice(self.projects)}"
        rec["deploymentId"] = r.choice(self.deployments)
        rec["host"] = f"{r.choice(WORDS)}-{self._b62(9).lower()}.vercel.app"
        rec["level"] = r.choices(("info", "warning", "error", "fatal"), (80, 10, 9, 1))[0]
        if source == "build":
            rec["buildId"] = f"bld_{self._b62(20)}"
            rec["entrypoint"] = "package.json"
        else:
            rec["requestId"] = f"{r.choice(REGIONS)}::{self._b62(5)}-{self.clock_ms}-{self._hex(12)}"
            rec["statusCode"] = r.choice((200, 200, 200, 201, 304, 404, 500, -1))
            rec["path"] = self._path()
            rec["executionRegion"] = r.choice(REGIONS)
            if r.random() < 0.9:  # dashboard test deliveries omit projectName
                rec["projectName"] = f"{r.choice(WORDS)}-web"
            rec["environment"] = r.choice(("production", "preview"))
            rec["branch"] = r.choice(("main", "feat/checkout", "fix/ünïcode-branch"))
            if r.random() < 0.6:  # with and without proxy
                rec["proxy"] = self._proxy(source, self.clock_ms)
            if source == "lambda":
                rec["entrypoint"] = f"api/{r.choice(WORDS)}.js"
                rec["traceId"] = self._hex(32)
                rec["spanId"] = self._hex(16)
            if source == "edge":
                rec["edgeType"] = r.choice(("edge-function", "middleware"))
            if source in ("external", "redirect"):
                rec["destination"] = f"https://{r.choice(WORDS)}.example.com{self._path()}"
            if r.random() < 0.15:
                rec["ja3Digest"] = self._hex(32)
                rec["ja4Digest"] = f"t13d1516h2_{self._hex(12)}_{self._hex(12)}"
        if r.random() < 0.02:  # unknown fields appear over time and must be kept
            rec["futureField"] = {"nested": [1, 2.5, True, None, "x"], "é": "ü"}
        return rec


def dump_record(rec: dict[str, object]) -> bytes:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()


def frame(lines: list[bytes], fmt: str, trailing_newline: bool) -> bytes:
    if fmt == "array":
        return b"[" + b",".join(lines) + b"]"
    return b"\n".join(lines) + (b"\n" if trailing_newline else b"")


def sign(body: bytes, secret: str = BENCH_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def build_set(spec: BodySpec, out: Path, secret: str = BENCH_SECRET) -> Path:
    """Write `spec`'s bodies, `index.tsv` and `manifest.json` into `out/spec.key`; reuse if there."""
    target = out / spec.key
    if (target / "manifest.json").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    # Same seed + same batch shape => same records, whatever the framing or compression, so
    # NDJSON/array/gzip sets are compared on identical content.
    factory = RecordFactory(spec.seed)
    content_type = "application/json" if spec.fmt == "array" else "application/x-ndjson"
    encoding = "gzip" if spec.gzip else ""
    index_lines: list[str] = []
    bodies: list[dict[str, object]] = []
    for n in range(spec.bodies):
        lines: list[bytes] = []
        size = 0
        while (spec.batch and len(lines) < spec.batch) or (
            not spec.batch and size < spec.target_bytes
        ):
            line = dump_record(factory.record())
            lines.append(line)
            size += len(line) + 1
        raw = frame(lines, spec.fmt, trailing_newline=n % 3 != 2)
        wire = gzip.compress(raw, compresslevel=6, mtime=0) if spec.gzip else raw
        name = f"body-{n:05d}.bin"
        (target / name).write_bytes(wire)
        index_lines.append(f"{name}\t{content_type}\t{encoding}\t{sign(wire, secret)}")
        ids = [json.loads(line)["id"] for line in lines]
        bodies.append({"file": name, "ids": ids, "raw_bytes": len(raw), "wire_bytes": len(wire)})
    (target / "index.tsv").write_text("\n".join(index_lines) + "\n")
    manifest = {"spec": spec.__dict__ | {"key": spec.key}, "format": spec.fmt, "bodies": bodies}
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def load_records(set_dir: Path) -> dict[str, dict[str, object]]:
    """Every original record of a set by id (for the verifier's content check)."""
    manifest = json.loads((set_dir / "manifest.json").read_text())
    records: dict[str, dict[str, object]] = {}
    for body in manifest["bodies"]:
        data = (set_dir / body["file"]).read_bytes()
        if manifest["spec"]["gzip"]:
            data = gzip.decompress(data)
        if manifest["format"] == "array":
            items = json.loads(data)
        else:
            items = [json.loads(line) for line in data.splitlines() if line.strip()]
        for item in items:
            records[item["id"]] = item
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/drain-bench/bodies"))
    parser.add_argument("--format", choices=("ndjson", "array"), default="ndjson")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--bodies", type=int, default=16)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--target-bytes", type=int, default=0)
    parser.add_argument("--seed", type=int, default=20240501)
    args = parser.parse_args()
    spec = BodySpec(args.format, args.batch, args.bodies, args.gzip, args.target_bytes, args.seed)
    path = build_set(spec, args.out)
    sizes = sorted(len(dump_record(r)) for r in load_records(path).values())
    print(f"{path}: {len(sizes)} records, median {sizes[len(sizes) // 2]} B, max {sizes[-1]} B")


if __name__ == "__main__":
    main()
