#!/bin/sh
# The installed library as a user meets it (issue 18): `meson install --destdir` into a temporary
# folder, then a small program built with nothing but `pkg-config --cflags --libs tapegrad` and a
# runtime path to the installed lib folder (as docs/guide.md's "Installing and linking" says),
# including <tapegrad/tapegrad.h>. Checks that
#   - the program compiles against the installed headers only, and a header of the user's own
#     named tensor.h on the include path neither hides nor is hidden by tapegrad's;
#   - it links and runs against the installed libtapegrad.so.0 (versioned soname), and computes
#     a gradient through OpenBLAS;
#   - the installed library's RUNPATH names Debian's OpenMP OpenBLAS folder when the build links
#     that flavour, and the program does load libopenblas.so.0 from there.
# SKIP (77) without pkg-config, a C compiler, meson or readelf.
#
# usage: test_install.sh BUILD_DIR LIBDIR INCLUDEDIR [OPENBLAS_RPATH]
#   LIBDIR, INCLUDEDIR: the build's absolute install folders (prefix / libdir, prefix / includedir)
#   OPENBLAS_RPATH: the folder the installed library must have in its RUNPATH ('' when the build
#   uses the system's default OpenBLAS)
set -u
build=$1 libdir=$2 includedir=$3 blas_rpath=${4:-}

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

command -v pkg-config >/dev/null 2>&1 || skip "no pkg-config"
CC=${CC:-cc}
command -v "$CC" >/dev/null 2>&1 || skip "no C compiler ($CC)"
command -v meson >/dev/null 2>&1 || skip "no meson on the PATH"
command -v readelf >/dev/null 2>&1 || skip "no readelf (binutils)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-install.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root

# --destdir keeps the configured prefix: the files land in $root$libdir, $root$includedir.
meson install -C "$build" --no-rebuild --quiet --destdir "$root" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; fail "meson install --destdir failed"; }
lib=$root$libdir
[ -f "$lib/pkgconfig/tapegrad.pc" ] || fail "no $lib/pkgconfig/tapegrad.pc"
[ -f "$root$includedir/tapegrad/tapegrad.h" ] || fail "no $root$includedir/tapegrad/tapegrad.h"

# The .pc says prefix=/usr/local (say); PKG_CONFIG_SYSROOT_DIR moves its -I and -L into $root,
# as they would be after a plain `meson install`. Nothing else goes on the command line.
PKG_CONFIG_PATH=$lib/pkgconfig
PKG_CONFIG_SYSROOT_DIR=$root
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
flags=$(pkg-config --cflags --libs tapegrad) || fail "pkg-config --cflags --libs tapegrad failed"
echo "pkg-config --cflags --libs tapegrad: $flags"

# A user's project: its own include/tensor.h, on the include path with -I like any project's,
# after pkg-config's flags (with the old -I${includedir}/tapegrad, "tensor.h" was tapegrad's).
mkdir -p "$tmp/user/include" "$tmp/user/src"
cat >"$tmp/user/include/tensor.h" <<'EOF'
/* the user's own tensor.h */
#define USER_TENSOR_H 1
typedef struct { int rank; } user_tensor;
EOF
cat >"$tmp/user/src/main.c" <<'EOF'
#include <stdio.h>
#include <tapegrad/tapegrad.h>
#include "tensor.h" /* the user's, not tapegrad's */

#ifndef USER_TENSOR_H
#error "#include \"tensor.h\" found tapegrad's tensor.h, not the user's"
#endif

int main(void)
{
    user_tensor mine = {2};
    /* loss = sum(W x) = 17 + 39 with W 2x2 and x 2x1: a GEMM in OpenBLAS; dloss/dW[i][j] = x[j]. */
    tg_tensor *w = tg_tensor_from_data(TG_DIMS(2, 2), (const float[]){1, 2, 3, 4});
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(2, 1), (const float[]){5, 6});
    if (!w || !x || tg_tensor_set_requires_grad(w, true) != TG_OK)
        return 1;
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_sum(tg_matmul(w, x));
    if (!loss || tg_backward(loss) != TG_OK)
        return 1;
    printf("loss %g grad %g %g %g %g rank %d\n", tg_tensor_item(loss), w->grad->data[0],
           w->grad->data[1], w->grad->data[2], w->grad->data[3], mine.rank);
    printf("blas: %s\n", tg_blas_info());
    tg_tape_end(tape);
    tg_tensor_release(w);
    tg_tensor_release(x);
    return tg_debug_live_tensors() == 0 ? 0 : 1;
}
EOF
# shellcheck disable=SC2086 # $flags: pkg-config's words
"$CC" -MD -MF "$tmp/main.d" "$tmp/user/src/main.c" $flags -I"$tmp/user/include" \
    -Wl,-rpath,"$lib" -o "$tmp/main" >"$tmp/cc.log" 2>&1 ||
    { cat "$tmp/cc.log"; fail "the program does not compile and link with pkg-config's flags"; }
# Every tapegrad header the compiler read came from the temporary install (and none from an
# install of tapegrad made by hand, such as /usr/local/include/tapegrad).
sed 's/\\$//' "$tmp/main.d" | tr ' ' '\n' | grep 'tapegrad/' >"$tmp/headers"
grep -qxF "$root$includedir/tapegrad/tapegrad.h" "$tmp/headers" ||
    fail "the program did not read $root$includedir/tapegrad/tapegrad.h: $(cat "$tmp/headers")"
while read -r h; do
    case $h in "$root"/*) ;; *) fail "the program read $h, from outside the install" ;; esac
done <"$tmp/headers"

# The installed library: versioned soname, RUNPATH to the OpenMP OpenBLAS.
so=$lib/libtapegrad.so
readelf -d "$so" >"$tmp/dynamic" || fail "readelf -d $so"
grep -E 'SONAME|RUNPATH|RPATH' "$tmp/dynamic"
grep -q 'Library soname: \[libtapegrad\.so\.0\]' "$tmp/dynamic" ||
    fail "the installed libtapegrad.so has no versioned soname (libtapegrad.so.0)"
[ -e "$lib/libtapegrad.so.0" ] || fail "no $lib/libtapegrad.so.0"
if [ -n "$blas_rpath" ]; then
    # "(RUNPATH) Library runpath: [a:b]" -> one folder a line (or an old-style RPATH)
    sed -n 's/.*(RU*N*PATH).*\[\(.*\)\]$/\1/p' "$tmp/dynamic" | tr ':' '\n' |
        grep -qxF "$blas_rpath" || fail "the installed libtapegrad.so's RUNPATH does not name $blas_rpath"
fi

# Run it with the dynamic loader's own search: no LD_LIBRARY_PATH.
unset LD_LIBRARY_PATH
out=$("$tmp/main" 2>&1)
status=$?
echo "$out"
[ $status -eq 0 ] || fail "the program failed (exit status $status)"
echo "$out" | grep -qx 'loss 56 grad 5 6 5 6 rank 2' || fail "wrong result"
if command -v ldd >/dev/null 2>&1; then
    ldd "$tmp/main" >"$tmp/ldd" 2>&1
    grep -E 'libtapegrad|libopenblas' "$tmp/ldd"
    grep -qF "libtapegrad.so.0 => $lib/libtapegrad.so.0 " "$tmp/ldd" ||
        fail "the program does not load the installed libtapegrad.so.0"
    if [ -n "$blas_rpath" ]; then
        grep -qF "libopenblas.so.0 => $blas_rpath/" "$tmp/ldd" ||
            fail "the program loads libopenblas.so.0 from elsewhere than $blas_rpath"
    fi
fi
echo "ok"
