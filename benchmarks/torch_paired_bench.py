#!/usr/bin/env python3
"""nestla against torch.optim on the CPU, paired: both step in one process, in rotation, and ratios are taken per rotation.

nestla's steps come from the shared library benchmarks/nestla_steps.cpp
(target nestla_steps), loaded with ctypes; torch's from every CPU variant the
installed torch has (foreach=False, foreach=True, fused=True). A rotation runs
each member for one block of steps; a ratio is torch's time over nestla's in
the same rotation; the tables give the median over rotations, and, from the
fastest block each member had, a second estimate (other jobs only add time).
Output: JSON for report.py --paired.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python3 benchmarks/torch_paired_bench.py \\
        --lib build/benchmarks/libnestla_steps.so --shapes benchmarks/resnet18_shapes.txt --out paired.json
"""
import argparse
import ctypes
import inspect
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_optim_bench import N, make_params, read_shapes  # noqa: E402

# nestla name -> (torch class, options); the same options on both sides (torch's defaults, SGD/Adam as
# torch_optim_bench.py).
OPTIMIZERS = {
    "Adam": (torch.optim.Adam, {"lr": 1e-3}),
    # --- Adagrad, RMSprop, Adadelta, Rprop ---
    "Adagrad": (torch.optim.Adagrad, {"lr": 1e-2}),
    "RMSprop": (torch.optim.RMSprop, {"lr": 1e-2}),
    "RMSprop-mc": (torch.optim.RMSprop, {"lr": 1e-2, "momentum": 0.9, "centered": True}),
    "Adadelta": (torch.optim.Adadelta, {"lr": 1.0}),
    "Rprop": (torch.optim.Rprop, {"lr": 1e-2}),
    # --- end of Adagrad, RMSprop, Adadelta, Rprop ---
}


class NestlaSteps:
    def __init__(self, lib, name, shapes, threads):
        sizes = [math.prod(s) for s in shapes]
        arr = (ctypes.c_size_t * len(sizes))(*sizes)
        self.lib = lib
        self.h = lib.nestla_steps_make(name.encode(), arr, len(sizes), threads)
        if not self.h:
            raise RuntimeError(lib.nestla_steps_error().decode())

    def steps(self, n):
        if self.lib.nestla_steps_run(self.h, n) != 0:
            raise RuntimeError(self.lib.nestla_steps_error().decode())

    def close(self):
        self.lib.nestla_steps_free(self.h)


class TorchSteps:
    def __init__(self, cls, options, variant, shapes):
        self.params = make_params(shapes)
        self.opt = cls(self.params, **options, **variant)

    def steps(self, n):
        for _ in range(n):
            self.opt.step()

    def close(self):
        del self.opt, self.params


def load_lib(path):
    lib = ctypes.CDLL(path)
    lib.nestla_steps_make.restype = ctypes.c_void_p
    lib.nestla_steps_make.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_size_t,
                                      ctypes.c_uint]
    lib.nestla_steps_run.restype = ctypes.c_int
    lib.nestla_steps_run.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.nestla_steps_free.argtypes = [ctypes.c_void_p]
    lib.nestla_steps_error.restype = ctypes.c_char_p
    return lib


def variants(cls):
    out = [("foreach=False", {"foreach": False}), ("foreach=True", {"foreach": True})]
    if "fused" in inspect.signature(cls).parameters:
        out.append(("fused=True", {"fused": True}))
    return out


def block_time(member, block):
    t0 = time.perf_counter()
    member.steps(block)
    return (time.perf_counter() - t0) / block


def run_group(lib, name, shapes, threads, rotations, block):
    cls, options = OPTIMIZERS[name]
    members = [("nestla", NestlaSteps(lib, name, shapes, threads))]
    for label, kw in variants(cls):
        try:
            m = TorchSteps(cls, options, kw, shapes)
            m.steps(1)
        except (RuntimeError, ValueError, TypeError) as e:  # e.g. a variant this build lacks on the CPU
            print(f"skip {name} {label}: {str(e).splitlines()[0]}", file=sys.stderr)
            continue
        members.append((label, m))
    for _, m in members:  # creates the state; past any first-step special case
        m.steps(3)
    per = {label: [] for label, _ in members}
    for _ in range(rotations):
        for label, m in members:
            per[label].append(block_time(m, block))
    for _, m in members:
        m.close()
    nestla = per["nestla"]
    out = {}
    for label, times in per.items():
        out[label] = {"s_per_step": statistics.median(times), "best_s_per_step": min(times), "samples": times,
                      "ratio_to_nestla": statistics.median(t / n for t, n in zip(times, nestla))}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, help="libnestla_steps.so")
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rotations", type=int, default=11)
    ap.add_argument("--block", type=int, default=3, help="steps per member and rotation")
    ap.add_argument("--filter", default="", help="only optimizers whose name contains this")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    lib = load_lib(args.lib)
    load_before = os.getloadavg()
    sets = {"single": [(N,)], "resnet18": read_shapes(args.shapes)}
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for set_name, shapes in sets.items():
            for name in OPTIMIZERS:
                if args.filter not in name:
                    continue
                r = run_group(lib, name, shapes, threads, args.rotations, args.block)
                results.append({"optimizer": name, "set": set_name, "threads": threads, "members": r})
                cells = "  ".join(f"{k} {v['s_per_step'] * 1e3:.2f} ms ({v['ratio_to_nestla']:.2f}x)"
                                  for k, v in r.items())
                print(f"{set_name:9s} t{threads} {name:11s} {cells}", file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump({"torch": torch.__version__, "python": sys.version.split()[0], "rotations": args.rotations,
                   "block": args.block, "load_before": load_before, "load_after": os.getloadavg(),
                   "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
