#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into tests/fuzz/corpus/<target>/ (committed; run again
after changing it). Small valid and near-valid inputs, made with the standard library only:

  idx:          idx3 ubyte images and idx1 labels, a float32 idx, the same gzip-compressed, and
                a few broken ones (truncated, extra byte, bad magic, a huge declared size).
  safetensors:  a checkpoint of fuzz_safetensors.c's model and Adam state (names, shapes and
                metadata exactly as tapegrad writes them), a 2-tensor file with metadata in
                other dtypes, and a few broken ones.
  cli:          mnist_gan command lines, arguments separated by NUL bytes (see fuzz_cli.c).

(corpus/api/ holds fuzz_api's seeds, op programs in its own byte code: not made here.)
"""
import gzip
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def idx(type_code, dims, payload):
    head = bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return head + payload


def gz(data):
    # mtime 0: the same bytes every run
    return gzip.compress(data, compresslevel=9, mtime=0)


def make_idx():
    images = idx(0x08, [2, 3, 3], bytes(range(0, 18 * 14, 14)))
    labels = idx(0x08, [2], bytes([3, 7]))
    floats = idx(0x0D, [2, 2], struct.pack(">4f", 0.5, -1.0, 3.25, 1e-3))
    write("idx", "images-idx3", images)
    write("idx", "labels-idx1", labels)
    write("idx", "float-idx2", floats)
    write("idx", "images-idx3.gz", gz(images))
    write("idx", "labels-idx1.gz", gz(labels))
    write("idx", "truncated-idx3", images[:-1])
    write("idx", "extra-byte-idx1", labels + b"\0")
    write("idx", "bad-magic", b"\0\1\x08\1\0\0\0\1\0")
    write("idx", "huge-dims-idx3", idx(0x08, [60000, 28, 28], b""))
    write("idx", "truncated.gz", gz(images)[:-6])
    # issue 19: non-finite and out-of-range float values, bytes after a gzip member, and two
    # members back to back (legal, read as their contents joined)
    write("idx", "float-nan-idx2", idx(0x0D, [2, 2], struct.pack(">4f", 0.5, float("nan"), 3.25, 1e-3)))
    write("idx", "float-inf-idx1", idx(0x0D, [3], struct.pack(">3f", 1.0, 2.0, float("-inf"))))
    write("idx", "float-huge-idx1", idx(0x0D, [2], struct.pack(">2f", 1e30, 3.5)))
    write("idx", "trailing-garbage.gz", gz(images) + b"garbage")
    write("idx", "two-members.gz", gz(images[:10]) + gz(images[10:]))


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)]; laid out back to back, as tapegrad does."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def f32(shape, start=0.0):
    n = 1
    for s in shape:
        n *= s
    return ("F32", shape, struct.pack("<%df" % n, *[start + 0.25 * i for i in range(n)]))


def make_safetensors():
    # fuzz_safetensors.c: m = Sequential(Linear(2, 3), BatchNorm1d(3)), Adam over its 4
    # parameters under "opt", after one step (step 1, both moments present).
    params = [("m.0.weight", [3, 2]), ("m.0.bias", [3]), ("m.1.weight", [3]), ("m.1.bias", [3])]
    tensors = [(name,) + f32(shape) for name, shape in params]
    tensors += [("m.1.running_mean",) + f32([3]), ("m.1.running_var",) + f32([3], 1.0),
                ("m.1.num_batches_tracked",) + f32([], 1.0)]
    for i, (_, shape) in enumerate(params):
        tensors += [("opt.%d.step" % i,) + f32([], 1.0), ("opt.%d.exp_avg" % i,) + f32(shape),
                    ("opt.%d.exp_avg_sq" % i,) + f32(shape, 0.5)]
    meta = {"opt.type": "Adam", "opt.num_params": "4", "opt.lr": "0.00100000005",
            "opt.weight_decay": "0", "opt.betas": "0.899999976,0.999000013",
            "opt.eps": "9.99999994e-09"}
    write("safetensors", "model-and-adam", safetensors(tensors, meta))
    two = safetensors([("a", "F16", [2, 2], struct.pack("<4e", 1, -2, 0.5, 65504)),
                       ("b.c", "I64", [3], struct.pack("<3q", -1, 0, 1 << 40))],
                      {"format": "pt", "note": "two tensors"})
    write("safetensors", "two-tensors-f16-i64", two)
    write("safetensors", "bf16-u8-bool",
          safetensors([("x", "BF16", [2], b"\x80\x3f\x00\xc0"), ("y", "U8", [2], b"\x01\xff"),
                        ("z", "BOOL", [1], b"\x01")]))
    write("safetensors", "empty-header", safetensors([]))
    write("safetensors", "truncated", two[:-3])
    write("safetensors", "overlap", struct.pack("<Q", 96) + json.dumps(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
         "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
        separators=(",", ":")).encode().ljust(96) + b"\0" * 4)
    make_safetensors_hostile(tensors, meta)


def make_safetensors_hostile(tensors, meta):
    """Issue 19's classes: values no layer or optimizer can use, numbers only a lax parser reads,
    names that would break a message, and many keys / values (the loader's limits)."""
    def with_value(name, value):
        return [(n, d, s, struct.pack("<f", value) + raw[4:] if n == name else raw)
                for n, d, s, raw in tensors]
    for tag, name, value in (("var-nan", "m.1.running_var", float("nan")),
                             ("var-negative", "m.1.running_var", -1.0),
                             ("count-half", "m.1.num_batches_tracked", 2.5),
                             ("weight-inf", "m.0.weight", float("inf")),
                             ("exp-avg-sq-negative", "opt.0.exp_avg_sq", -1.0)):
        write("safetensors", "bad-" + tag, safetensors(with_value(name, value), meta))
    for tag, key, value in (("lr-garbage", "opt.lr", "0garbage"),
                            ("betas-blank", "opt.betas", " 0.9,0.999"),
                            ("eps-nan", "opt.eps", "nan"),
                            ("decay-hex", "opt.weight_decay", "0x0p+0"),
                            ("type-escape", "opt.type", "Ad\x1b[31mam\n")):
        write("safetensors", "meta-" + tag, safetensors(tensors, dict(meta, **{key: value})))
    write("safetensors", "name-escape",
          safetensors([("\x1b[31mred", "F32", [1], b"\0" * 4)], {"a\nb": "v"}))
    write("safetensors", "name-non-ascii",
          safetensors([("caf\u00e9\u202e", "X", [0], b"")]))
    write("safetensors", "many-meta-keys",
          safetensors([], {"%x" % i: "" for i in range(2000)}))
    write("safetensors", "long-shape",
          safetensors([("x", "F32", [0] * 5000, b"")]))


def make_cli():
    lines = [
        ["train", "--epochs", "2", "--batch", "64", "--lr", "2e-4", "--seed", "7"],
        ["train", "--recipe", "dcgan", "--generator", "convt", "--step", "clean", "--beta1", "0.5"],
        ["train", "--data", "d", "--digit", "3", "--iters", "10", "--log-every", "5",
         "--grid-scale", "per-image", "--out", "o", "--resume", "--width-div", "8"],
        ["train", "--eval-every", "100", "--eval-n", "50", "--classifier", "c.safetensors",
         "--threads", "1", "--dataset", "fashion"],
        ["sample", "--checkpoint", "ck.safetensors", "--n", "16", "--out", "s.png", "--idx", "p"],
        ["eval", "--checkpoint", "ck", "--classifier", "cl", "--n", "100", "--json", "e.jsonl"],
        ["--help"],
        ["train", "--batch", "1"],
        ["train", "--lr", "nan"],
    ]
    for i, argv in enumerate(lines):
        write("cli", "argv-%d" % i, b"\0".join(a.encode() for a in argv))


def main():
    for target, make in (("idx", make_idx), ("safetensors", make_safetensors), ("cli", make_cli)):
        d = os.path.join(CORPUS, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        make()


if __name__ == "__main__":
    main()
