#!/usr/bin/env python3
"""Generate tests/data/golden_clip.json: gradient clipping by PyTorch, for tests/test_clip.cpp.

Run with a Python that has PyTorch 2.x from PyPI (the committed file was made
with 2.15.0; Debian's 1.13 lacks torch.nn.utils.get_total_norm):

    python3 tools/make_golden_clip.py

The output is deterministic (byte-identical on a rerun): PyTorch's CPU kernels
are pinned to the portable code path (ATEN_CPU_CAPABILITY=default, no fused
multiply-adds) and one thread.

Gradients are not stored: they come from an integer hash that the C++ test
computes too (noise() below; exact in float64, and cast to float32 by
rounding to nearest on both sides), so only PyTorch's results are in the file.

JSON schema
-----------
{
  "torch": str,                      # the PyTorch version
  "functions": [                     # torch.nn.utils.clip_grad_norm_ / clip_grad_value_
    {
      "name": str,
      "dtype": "float64" | "float32",
      "kind": "norm" | "value",
      "sizes": [int, ...],           # tensors of the set (flat)
      "seed": int,                   # gradient j of tensor t: grad(seed, t, j)
      "max_norm": float, "norm_type": float | "inf",     # kind "norm"
      "clip_value": float,                                # kind "value"
      "total_norm": float,           # kind "norm": clip_grad_norm_'s return value
      "stride": int,                 # clipped holds elements 0, stride, 2 stride, ... of each tensor
      "clipped": [[float, ...], ...] # the gradients after the call
    }, ...
  ],
  "steps": [                         # clip before every step of a torch.optim optimizer (foreach=False, float64)
    {
      "name": str,
      "optimizer": "adam" | "adamw" | "sgd",
      "options": {...},              # torch's keyword arguments (betas as a list)
      "clip": {"kind": "norm", "max_norm": float, "norm_type": float | "inf"} | {"kind": "value", "clip_value": float},
      "sizes": [int, ...],
      "init_seed": int,              # initial parameter j of tensor t: noise(init_seed, t, j)
      "steps": int,                  # gradients at step s (from 0): grad(100 + s, t, j)
      "total_norms": [float, ...],   # kind "norm": the total norm at each step
      "params_first": [[...], ...],  # parameters after the first step
      "params_last": [[...], ...]    # and after the last
    }, ...
  ]
}
"""
import json
import math
import os
import sys

os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
import torch  # noqa: E402

torch.set_num_threads(1)
M64 = (1 << 64) - 1


def noise(seed, t, j):
    """A value in [-1, 1) from (seed, t, j): splitmix-style integer mixing, exact in float64."""
    x = ((seed * 0x9E3779B97F4A7C15) ^ (t * 0xBF58476D1CE4E5B9) ^ (j * 0x94D049BB133111EB)) & M64
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & M64
    x ^= x >> 32
    return (x >> 11) / float(1 << 53) * 2 - 1


def grad(seed, t, j):
    """Gradient values over a few binades (1/4 to 4), exact in float64."""
    return noise(seed, t, j) * 2.0 ** ((t + j) % 5 - 2)


def grads_for(seed, sizes, dtype):
    return [torch.tensor([grad(seed, t, j) for j in range(n)], dtype=torch.float64).to(dtype) for t, n in enumerate(sizes)]


def norm_type_json(p):
    return "inf" if math.isinf(p) else p


def function_cases():
    small = [7, 12, 1, 300]
    big = [4100, 5000, 33, 8193]  # several 4096-element chunks and tensors crossing them
    specs = [
        # name, sizes, seed, max_norm as a fraction of the total norm (None: absolute), norm_type
        ("small_l2", small, 1, 0.5, 2.0),
        ("small_l1", small, 2, 0.25, 1.0),
        ("small_inf", small, 3, 0.5, math.inf),
        ("small_p3", small, 4, 0.5, 3.0),
        ("small_p0.5", small, 5, 0.5, 0.5),
        ("small_p1.5", small, 6, 0.9, 1.5),
        ("small_l2_unclipped", small, 7, 2.0, 2.0),  # coefficient clamped to 1
        ("big_l2", big, 8, 0.3, 2.0),
        ("big_inf", big, 9, 0.3, math.inf),
        ("big_l1", big, 10, 0.3, 1.0),
    ]
    cases = []
    for dtype, dname in ((torch.float64, "float64"), (torch.float32, "float32")):
        for name, sizes, seed, frac, p in specs:
            g = grads_for(seed, sizes, dtype)
            params = [torch.nn.Parameter(torch.zeros(n, dtype=dtype)) for n in sizes]
            for q, x in zip(params, g):
                q.grad = x.clone()
            # A max_norm that clips (or not) by a known margin, fixed in float64 from the float64 norm.
            ref = torch.nn.utils.get_total_norm([x.double() for x in grads_for(seed, sizes, torch.float64)], p).item()
            max_norm = float(ref * frac)
            total = torch.nn.utils.clip_grad_norm_(params, max_norm, p)
            stride = 1 if sum(sizes) < 1000 else 61
            cases.append({
                "name": f"{name}_{dname}", "dtype": dname, "kind": "norm", "sizes": sizes, "seed": seed,
                "max_norm": max_norm, "norm_type": norm_type_json(p), "total_norm": total.item(), "stride": stride,
                "clipped": [q.grad[::stride].double().tolist() for q in params],
            })
        for name, sizes, seed, value in (("small_value", small, 11, 0.3), ("big_value", big, 12, 1.5)):
            params = [torch.nn.Parameter(torch.zeros(n, dtype=dtype)) for n in sizes]
            for q, x in zip(params, grads_for(seed, sizes, dtype)):
                q.grad = x.clone()
            torch.nn.utils.clip_grad_value_(params, value)
            stride = 1 if sum(sizes) < 1000 else 61
            cases.append({
                "name": f"{name}_{dname}", "dtype": dname, "kind": "value", "sizes": sizes, "seed": seed,
                "clip_value": value, "stride": stride, "clipped": [q.grad[::stride].double().tolist() for q in params],
            })
    return cases


def step_cases():
    sizes = [7, 12, 300, 1]
    nsteps = 6
    adam = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False}
    specs = [
        ("adam_l2", "adam", adam, {"kind": "norm", "max_norm": 1.0, "norm_type": 2.0}),
        ("adam_amsgrad_wd_inf", "adam", {**adam, "weight_decay": 0.1, "amsgrad": True},
         {"kind": "norm", "max_norm": 0.5, "norm_type": math.inf}),
        # max_norm near the gradients' norm: some steps clip, some do not.
        ("adamw_l2_sometimes", "adamw", {**adam, "weight_decay": 0.01}, {"kind": "norm", "max_norm": 20.7, "norm_type": 2.0}),
        ("sgd_nesterov_l1", "sgd", {"lr": 0.01, "momentum": 0.9, "dampening": 0.0, "weight_decay": 1e-3, "nesterov": True,
                                    "maximize": False}, {"kind": "norm", "max_norm": 3.0, "norm_type": 1.0}),
        ("adam_p3", "adam", adam, {"kind": "norm", "max_norm": 0.75, "norm_type": 3.0}),
        ("adam_value", "adam", adam, {"kind": "value", "clip_value": 0.4}),
        ("sgd_value", "sgd", {"lr": 0.05, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False,
                              "maximize": False}, {"kind": "value", "clip_value": 0.25}),
    ]
    cases = []
    for name, opt_name, options, clip in specs:
        params = [torch.nn.Parameter(torch.tensor([noise(42, t, j) for j in range(n)], dtype=torch.float64))
                  for t, n in enumerate(sizes)]
        kw = dict(options)
        if opt_name == "sgd":
            opt = torch.optim.SGD(params, foreach=False, **kw)
        else:
            kw["betas"] = tuple(kw["betas"])
            cls = torch.optim.Adam if opt_name == "adam" else torch.optim.AdamW
            opt = cls(params, foreach=False, **kw)
        norms, first = [], None
        for s in range(nsteps):
            for q, g in zip(params, grads_for(100 + s, sizes, torch.float64)):
                q.grad = g
            if clip["kind"] == "norm":
                p = math.inf if clip["norm_type"] == math.inf else clip["norm_type"]
                norms.append(torch.nn.utils.clip_grad_norm_(params, clip["max_norm"], p).item())
            else:
                torch.nn.utils.clip_grad_value_(params, clip["clip_value"])
            opt.step()
            if first is None:
                first = [q.detach().tolist() for q in params]
        c = dict(clip)
        if "norm_type" in c:
            c["norm_type"] = norm_type_json(c["norm_type"])
        cases.append({
            "name": name, "optimizer": opt_name, "options": options, "clip": c, "sizes": sizes, "init_seed": 42,
            "steps": nsteps, "total_norms": norms, "params_first": first,
            "params_last": [q.detach().tolist() for q in params],
        })
    return cases


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "golden_clip.json")
    data = {"torch": torch.__version__, "functions": function_cases(), "steps": step_cases()}
    with open(out, "w") as f:
        json.dump(data, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.normpath(out)} (torch {torch.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
