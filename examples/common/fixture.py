"""Shared by the examples' conformance/make_fixture.py scripts, which write the PyTorch side of
tests/test_*_conformance.c as safetensors files that tapegrad's tg_data_load_safetensors reads.

A script imports it by path, so it works from any working directory:
    sys.path.insert(0, os.path.join(ROOT, "examples", "common"))
    from fixture import write_safetensors"""
import json
import os
import struct

import numpy as np


def write_safetensors(path, tensors, meta):
    """safetensors: 8-byte little-endian header length, JSON header padded with spaces to a
    multiple of 8, then the raw little-endian float32 data in header order. tensors maps names
    to arrays (anything np.shape and np.ascontiguousarray take), meta names to strings. Written
    to path.tmp first, so an interrupted run leaves the old fixture."""
    header = {"__metadata__": meta}
    blobs, off = [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(a)),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
