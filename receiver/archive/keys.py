"""Object keys for the file sink's finished files, in Hive style (`name=value` parts).

    <prefix>/stream=<s>[/<field>=<v>...]/date=YYYY-MM-DD/hour=HH/<host>-w<n>-<stamp>.ndjson.gz
    <prefix>/rejected/stream=<s>/date=.../hour=.../<host>-w<n>-<stamp>.ndjson.gz   (rejects)

`<field>=<v>` are the `--path-template` fields other than `{stream}` and `{date}`
(`projectId`, `source`), in the template's order. Date, hour and `<stamp>` come from the
rotation stamp in the file's name: the UTC time the sink cut the file, so at most
`--rotate-every` after its last record arrived. The name, not the content, decides the key:
a retry, a restart or a second uploader writes the same key, and no two files of one host and
worker share a stamp (the sink adds `-<n>` to a stamp that is taken).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from receiver.sinks.files import REJECTED_PARTITION, STREAM_NAME, safe_component

FINISHED_NAME = re.compile(
    rf"(?P<stream>{STREAM_NAME})(?:-w(?P<worker>\d+))?"
    r"-(?P<stamp>(?P<date>\d{8})T(?P<hour>\d{2})\d{4}\.\d{6}Z(?:-\d+)?)\.ndjson\.gz"
)


@dataclass(frozen=True)
class ArchiveTarget:
    """Where the archive goes: `s3://bucket/prefix`."""

    bucket: str
    prefix: str

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def parse_archive_url(text: str) -> ArchiveTarget:
    """`s3://bucket/some/prefix` -> ArchiveTarget; else ValueError saying what is expected."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", text.strip())
    if not match:
        raise ValueError(f"not an archive URL: {text!r} (use s3://BUCKET or s3://BUCKET/PREFIX)")
    prefix = (match.group(2) or "").strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"archive prefix {prefix!r} has an empty, '.' or '..' part")
    return ArchiveTarget(match.group(1), prefix)


def is_finished(name: str) -> bool:
    """Whether `name` is a file the sink has finished (rotated and compressed)."""
    return FINISHED_NAME.fullmatch(name) is not None


def object_key(relative: PurePosixPath, template: str, prefix: str, host: str) -> str:
    """The key of the finished file at `relative` (to the sink's root); ValueError if it is
    not a finished file's name."""
    match = FINISHED_NAME.fullmatch(relative.name)
    if match is None:
        raise ValueError(f"{relative} is not a finished file of the file sink")
    partition = relative.parent.as_posix()
    if partition == REJECTED_PARTITION:
        parts = [REJECTED_PARTITION, f"stream={match['stream']}"]
    else:
        parts = [f"stream={match['stream']}"]
        parts += [f"{name}={value}" for name, value in template_fields(template, partition)]
    day = match["date"]
    parts += [f"date={day[:4]}-{day[4:6]}-{day[6:]}", f"hour={match['hour']}"]
    parts.append(f"{safe_component(host)}-w{match['worker'] or 0}-{match['stamp']}.ndjson.gz")
    return "/".join([prefix, *parts] if prefix else parts)


def template_fields(template: str, partition: str) -> list[tuple[str, str]]:
    """The values of the template's fields other than stream and date in `partition`, in the
    template's order; none when the partition was made by another template."""
    names: list[str] = []
    pattern = ""
    for literal, name in re.findall(r"([^{]*)(?:\{([^{}]*)\})?", template):
        pattern += re.escape(literal)
        if name:
            pattern += rf"(?P<f{len(names)}>[^/]+)"
            names.append(name)
    match = re.fullmatch(pattern, partition)
    if match is None:
        return []
    return [(name, match[f"f{i}"]) for i, name in enumerate(names) if name not in ("stream", "date")]
