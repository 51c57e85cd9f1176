#!/usr/bin/env python3
"""PyTorch's Adam on the GPU over the ResNet-18 parameter set, for comparison with bench_optim.

The same 62 tensors (11,173,962 float32, CIFAR stem) as benchmarks/gpu/bench_optim.cu,
one allocation each; torch.optim.Adam with fused=True and with foreach=True; device
copy bandwidth measured the same way. Times are medians over repetitions of many
back-to-back steps, taken with CUDA events. Prints a report, then "RESULT key value" lines.
"""
import argparse
import statistics
import sys

SHAPES = [
    (64, 3, 3, 3), (64,), (64,),
    *[s for _ in range(4) for s in ((64, 64, 3, 3), (64,), (64,))],
    (128, 64, 3, 3), (128,), (128,), (128, 128, 3, 3), (128,), (128,), (128, 64, 1, 1), (128,), (128,),
    (128, 128, 3, 3), (128,), (128,), (128, 128, 3, 3), (128,), (128,),
    (256, 128, 3, 3), (256,), (256,), (256, 256, 3, 3), (256,), (256,), (256, 128, 1, 1), (256,), (256,),
    (256, 256, 3, 3), (256,), (256,), (256, 256, 3, 3), (256,), (256,),
    (512, 256, 3, 3), (512,), (512,), (512, 512, 3, 3), (512,), (512,), (512, 256, 1, 1), (512,), (512,),
    (512, 512, 3, 3), (512,), (512,), (512, 512, 3, 3), (512,), (512,),
    (10, 512), (10,),
]


def median_ms(torch, fn, calls, reps):
    if not torch.cuda.is_available():  # no GPU (--device cpu): a check of this script, not a benchmark
        import time
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - t0) * 1e3 / calls)
        return statistics.median(times)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=25)
    ap.add_argument("--only", default="", help="comma-separated case keys (default: all)")
    ap.add_argument("--device", default="cuda", help="cpu: check this script where there is no GPU (no GPU figures)")
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"PyTorch is not available: {e}")
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("PyTorch sees no CUDA device")
        return 2
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, "
          + (f"GPU: {torch.cuda.get_device_name(0)}" if dev.type == "cuda" else "CPU (a check of the script, not a benchmark)"))
    n = sum(int(torch.Size(s).numel()) for s in SHAPES)
    assert len(SHAPES) == 62 and n == 11_173_962, (len(SHAPES), n)

    src = torch.rand(4 * n, device=dev)
    dst = torch.empty_like(src)
    copy_ms = median_ms(torch, lambda: dst.copy_(src), 10, args.reps)
    copy_gbs = 2 * 4 * 4 * n / copy_ms * 1e-6
    print(f"copy: {copy_gbs:.0f} GB/s ({2 * 4 * 4 * n * 1e-6:.0f} MB moved)")
    del src, dst

    results = {"torch_copy_GBps": copy_gbs}
    clip = torch.nn.utils
    # (key, optimizer class, its options, clipping before each step or None)
    cases = (
        ("adam_fused", torch.optim.Adam, {"lr": 1e-3, "fused": True}, None),
        ("adam_foreach", torch.optim.Adam, {"lr": 1e-3, "foreach": True}, None),
        ("adamw_fused", torch.optim.AdamW, {"lr": 1e-3, "fused": True}, None),
        ("sgd_momentum_fused", torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "fused": True}, None),
        # As bench_optim: max_norm 1 (no host wait: error_if_nonfinite is off), value 1e-3.
        ("adam_clip_norm", torch.optim.Adam, {"lr": 1e-3, "fused": True},
         lambda ps: clip.clip_grad_norm_(ps, 1.0, foreach=True)),
        ("adam_clip_value", torch.optim.Adam, {"lr": 1e-3, "fused": True},
         lambda ps: clip.clip_grad_value_(ps, 1e-3, foreach=True)),
    )
    for name, cls, kwargs, clipper in cases:
        if args.only and name not in args.only.split(","):
            continue
        params = [torch.nn.Parameter(torch.rand(s, device=dev) * 0.02) for s in SHAPES]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt = cls(params, **kwargs)
        if clipper is None:
            step = opt.step
        else:
            def step(opt=opt, params=params, clipper=clipper):
                clipper(params)
                opt.step()
        for _ in range(args.warmup):
            step()
        sync()
        ms = median_ms(torch, step, args.steps, args.reps)
        # Bytes that must move per element, as in bench_optim: SGD momentum 20, Adam 28, + norm 32.
        per = {"sgd_momentum_fused": 20, "adam_clip_norm": 32}.get(name, 28)
        gbs = per * n / ms * 1e-6
        print(f"{name} ({cls.__name__}{' after clip_grad_' + name[10:] + '_' if clipper else ''}): "
              f"{ms:.4f} ms, {gbs:.0f} GB/s at {per} B/element, {100 * gbs / copy_gbs:.1f}% of copy")
        results[f"torch_{name}_ms"] = ms
        if name.startswith("adam_"):
            results[f"torch_{name}_GBps"] = gbs
        del opt, params, step
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    for k, v in results.items():
        print(f"RESULT {k} {v:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
