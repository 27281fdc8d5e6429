#!/usr/bin/env python3
"""An independent safetensors writer for pipetrain's tests: only struct and json from the standard
library, following the format's specification (8-byte little-endian header length, a JSON header of
dtype / shape / data_offsets and __metadata__, then the data), not pipetrain's code.

It writes the documented tensor names (README, "Weights files") of a model of the given shape, each
tensor's element k of tensor t holding ((k % 97) - 48) / 64 + t / 1024 as float32: values exact in
binary, so the reader's test can recompute them.

    python3 tests/write_safetensors.py OUT --vocab 256 --hidden 32 --layers 3 --intermediate 64 --seq-len 16
"""
import argparse
import json
import struct


def tensors(vocab, hidden, layers, intermediate, seq_len):
    out = [("embed.tokens.weight", [vocab, hidden]), ("embed.positions.weight", [seq_len, hidden])]
    for i in range(layers):
        b = "blocks.%d." % i
        out += [(b + "ln1.weight", [hidden]), (b + "ln1.bias", [hidden]),
                (b + "qkv.weight", [3 * hidden, hidden]), (b + "qkv.bias", [3 * hidden]),
                (b + "attn_out.weight", [hidden, hidden]), (b + "attn_out.bias", [hidden]),
                (b + "ln2.weight", [hidden]), (b + "ln2.bias", [hidden]),
                (b + "fc_in.weight", [intermediate, hidden]), (b + "fc_in.bias", [intermediate]),
                (b + "fc_out.weight", [hidden, intermediate]), (b + "fc_out.bias", [hidden])]
    out += [("head.norm.weight", [hidden]), ("head.norm.bias", [hidden]), ("head.lm_head.weight", [vocab, hidden])]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    for name in ("vocab", "hidden", "layers", "intermediate", "seq-len"):
        parser.add_argument("--" + name, type=int, required=True)
    a = parser.parse_args()
    header = {"__metadata__": {"format": "pt", "writer": "tests/write_safetensors.py"}}
    data = bytearray()
    # Written in reverse order of the names, so that a reader relying on the header's order would fail.
    for t, (name, shape) in reversed(list(enumerate(tensors(a.vocab, a.hidden, a.layers, a.intermediate, a.seq_len)))):
        count = 1
        for d in shape:
            count *= d
        values = [((k % 97) - 48) / 64 + t / 1024 for k in range(count)]
        begin = len(data)
        data += struct.pack("<%df" % count, *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [begin, len(data)]}
    text = json.dumps(header).encode("utf-8")
    with open(a.out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)


if __name__ == "__main__":
    main()
