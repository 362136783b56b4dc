#!/usr/bin/env bash
# Gets a machine ready for the container tests (tests/test_deploy.py) and prints the base image
# they build on. Safe to run again; the first run as root takes about a minute.
#
#   bash deploy/test-base-image.sh [IMAGE]      # IMAGE: localhost/python-base:bookworm
#
# 1. podman, runc and debootstrap: installed with apt-get when missing (needs root).
# 2. /etc/containers/containers.conf, only when there is none: host networking (the tests reach
#    each container on 127.0.0.1 at the port it listens on), runc with cgroupfs, and fixed
#    ulimits, which also work in sandboxes that forbid raising rlimits or mix cgroup versions.
# 3. IMAGE, when podman does not have it: a minimal Debian bookworm with python3 and venv made
#    by debootstrap, standing in for `python:3.12-slim` where no registry can be reached. An IMAGE
#    that podman already has (pulled or built) is used as it is, e.g. docker.io/library/python:3.12-slim.
#
# Exit status 77 means no container engine is usable here (the tests skip, saying why); any
# other failure is an error to fix.
set -euo pipefail

image=${1:-localhost/python-base:bookworm}
unusable=77

say() { printf 'test-base-image: %s\n' "$*" >&2; }

missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    if ! command -v podman >/dev/null; then
      say "podman is not installed and cannot be installed here (needs root and apt-get);"
      say "install podman (https://podman.io/docs/installation) to run the container tests"
      exit "$unusable"
    fi
  else
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
fi

if [[ $EUID -eq 0 && ! -e /etc/containers/containers.conf ]]; then
  say "writing /etc/containers/containers.conf (host network, runc, cgroupfs, fixed ulimits)"
  mkdir -p /etc/containers
  cat >/etc/containers/containers.conf <<'CONF'
# Written by vercel-drain-receiver's deploy/test-base-image.sh for its container tests.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
netns = "host"
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
fi

if ! podman info >/dev/null 2>&1; then
  say "podman is installed but does not work here: $(podman info 2>&1 | tail -n 1)"
  exit "$unusable"
fi

if ! podman image exists "$image"; then
  if [[ $image != localhost/* ]]; then
    say "$image is not in podman's store: pull it first (podman pull $image)"
    exit 1
  fi
  if [[ $EUID -ne 0 ]] || ! command -v debootstrap >/dev/null; then
    say "$image is missing and building it needs root and debootstrap"
    exit "$unusable"
  fi
  say "building $image with debootstrap (about a minute)"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" >/dev/null
  tar -C "$root" -c . | podman import - "$image" >/dev/null
fi

if ! podman run --rm "$image" python3 -c 'import venv' >/dev/null 2>&1; then
  say "podman cannot run a container of $image here:"
  podman run --rm "$image" python3 -c 'import venv' 2>&1 | tail -n 3 >&2 || true
  exit "$unusable"
fi
echo "$image"
