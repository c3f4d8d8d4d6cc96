# What the studies' e2e tests (test_per_digit.sh, test_study.sh) share; sourced, after
# build, src, data, test_name (NAME) and test_table (TABLE) are set, with
#   . "$src/examples/augment/test_common.sh"
# It SKIPs (exit 77) without MNIST in $data, makes $tmp (removed
# at exit unless TG_KEEP_TMP is set) and $out=$tmp/out, and defines fail, which says NAME: the
# message, shows $out/TABLE and exits 1.
[ -f "$data/train-images-idx3-ubyte" ] || [ -f "$data/train-images-idx3-ubyte.gz" ] || {
    echo "SKIP: no MNIST in $data (scripts/fetch-mnist.sh)"
    exit 77
}
tmp=$(mktemp -d "/tmp/tg_${test_name}_XXXXXX")
[ -n "${TG_KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
out=$tmp/out
fail() {
    echo "$test_name: $*" >&2
    [ ! -f "$out/$test_table" ] || cat "$out/$test_table" >&2
    exit 1
}
