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
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"PyTorch is not available: {e}")
        return 2
    if not torch.cuda.is_available():
        print("PyTorch sees no CUDA device")
        return 2
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, GPU: {torch.cuda.get_device_name(0)}")
    n = sum(int(torch.Size(s).numel()) for s in SHAPES)
    assert len(SHAPES) == 62 and n == 11_173_962, (len(SHAPES), n)

    src = torch.rand(4 * n, device=dev)
    dst = torch.empty_like(src)
    copy_ms = median_ms(torch, lambda: dst.copy_(src), 10, args.reps)
    copy_gbs = 2 * 4 * 4 * n / copy_ms * 1e-6
    print(f"copy: {copy_gbs:.0f} GB/s ({2 * 4 * 4 * n * 1e-6:.0f} MB moved)")
    del src, dst

    results = {"torch_copy_GBps": copy_gbs}
    for name, kwargs in (("fused", {"fused": True}), ("foreach", {"foreach": True})):
        params = [torch.nn.Parameter(torch.rand(s, device=dev) * 0.02) for s in SHAPES]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt = torch.optim.Adam(params, lr=1e-3, **kwargs)
        for _ in range(25):
            opt.step()
        torch.cuda.synchronize()
        ms = median_ms(torch, opt.step, args.steps, args.reps)
        gbs = 28 * n / ms * 1e-6
        print(f"torch.optim.Adam({name}=True): {ms:.4f} ms, {gbs:.0f} GB/s (28 B/element), {100 * gbs / copy_gbs:.1f}% of copy")
        results[f"torch_adam_{name}_ms"] = ms
        results[f"torch_adam_{name}_GBps"] = gbs
        del opt, params
        torch.cuda.empty_cache()
    for k, v in results.items():
        print(f"RESULT {k} {v:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
