#!/usr/bin/env python3
"""torch.optim steps on the CPU (foreach off/on, fused; Adam after clip_grad_norm_ / clip_grad_value_; Python Lookahead 1-2 deep) on
nestla_bench's tensors, as JSON; with --nestla-lib, every optimizer of PAIRED against nestla's, timed in this process in
rotation (benchmarks/nestla_capi.cpp)."""
import argparse
import ctypes
import inspect
import json
import math
import statistics
import sys
import time

import torch

N = 11173962
K = 5  # Lookahead's k at every level, as in nestla_bench


def read_shapes(path):
    shapes = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                shapes.append(tuple(int(d) for d in line.split()[1:]))
    return shapes


def make_params(shapes, seed=1):
    g = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.empty(s).uniform_(0.01, 0.1, generator=g))
        # Same magnitudes as nestla_bench: Adam's state stays clear of denormals.
        p.grad = torch.empty(s).uniform_(1e-3, 1e-2, generator=g)
        p.grad.mul_(torch.randint(0, 2, s, generator=g).mul_(2).sub_(1))
        params.append(p)
    return params


class Base:
    """Adapts a torch.optim optimizer to the cycle protocol: every step is a cycle."""

    def __init__(self, opt, params):
        self.opt, self.params = opt, params

    def step(self):
        self.opt.step()
        return True

    def levels(self):
        return []


class Clipped(Base):
    """torch.nn.utils.clip_grad_norm_ (max_norm 1) or clip_grad_value_ (5e-3) before every step, as users write it."""

    def __init__(self, opt, params, how):
        super().__init__(opt, params)
        self.how = how

    def step(self):
        if self.how == "norm":
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        else:
            torch.nn.utils.clip_grad_value_(self.params, 5e-3)
        self.opt.step()
        return True


class Lookahead:
    """Lookahead (Zhang et al. 2019) over Base or Lookahead, nestla's semantics, momentum kept.

    Syncs after every k-th inner cycle: slow += alpha (p - slow); p = slow; inner
    levels' slow weights = slow. Foreach kernels where the installed torch has them.
    """

    def __init__(self, inner, k=K, alpha=0.5):
        self.inner, self.k, self.alpha, self.count = inner, k, alpha, 0
        self.params = inner.params
        with torch.no_grad():
            self.slow = [p.detach().clone() for p in self.params]

    def levels(self):
        return self.inner.levels() + [self]

    @torch.no_grad()
    def step(self):
        if not self.inner.step():
            return False
        self.count += 1
        if self.count < self.k:
            return False
        self.count = 0
        if hasattr(torch, "_foreach_lerp_"):
            torch._foreach_lerp_(self.slow, self.params, self.alpha)
        else:
            for s, p in zip(self.slow, self.params):
                s.lerp_(p, self.alpha)
        copy = getattr(torch, "_foreach_copy_", None)
        for dst in [self.params] + [lvl.slow for lvl in self.inner.levels()]:
            if copy is not None:
                copy(dst, self.slow)
            else:
                for d, s in zip(dst, self.slow):
                    d.copy_(s)
        return True


def optimizer_configs():
    """(name, factory(params) -> torch optimizer) for every variant the installed torch offers."""
    configs = []
    for cls, extra in ((torch.optim.SGD, {"momentum": 0.9}), (torch.optim.Adam, {}), (torch.optim.AdamW, {})):
        variants = [("foreach=False", {"foreach": False}), ("foreach=True", {"foreach": True})]
        if "fused" in inspect.signature(cls).parameters:
            variants.append(("fused=True", {"fused": True}))
        for label, kw in variants:
            configs.append((f"{cls.__name__} {label}", lambda ps, cls=cls, kw={**extra, **kw}: cls(ps, lr=1e-3, **kw)))
    return configs


# --- paired with nestla -------------------------------------------------------


class LionPerTensor:
    """Lion (Chen et al. 2023) as lion-pytorch steps it: one tensor at a time, decoupled decay first."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0):
        self.params, self.lr, self.betas, self.wd = params, lr, betas, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        for p, m in zip(self.params, self.exp_avg):
            if self.wd:
                p.mul_(1 - self.lr * self.wd)
            p.add_(m.mul(b1).add_(p.grad, alpha=1 - b1).sign_(), alpha=-self.lr)
            m.mul_(b2).add_(p.grad, alpha=1 - b2)


class LionForeach(LionPerTensor):
    """The same with torch's multi-tensor (foreach) kernels, as timm's multi-tensor Lion."""

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        grads = [p.grad for p in self.params]
        if self.wd:
            torch._foreach_mul_(self.params, 1 - self.lr * self.wd)
        u = torch._foreach_mul(self.exp_avg, b1)
        torch._foreach_add_(u, grads, alpha=1 - b1)
        if hasattr(torch, "_foreach_sign_"):
            torch._foreach_sign_(u)
        else:
            for x in u:
                x.sign_()
        torch._foreach_add_(self.params, u, alpha=-self.lr)
        torch._foreach_mul_(self.exp_avg, b2)
        torch._foreach_add_(self.exp_avg, grads, alpha=1 - b2)


def torch_variants(cls, **options):
    """(label, factory(params)) for each implementation the installed torch has of cls: foreach off, on, fused."""
    names = inspect.signature(cls).parameters
    variants = [("foreach=False", {"foreach": False}), ("foreach=True", {"foreach": True})]
    if "fused" in names:
        variants.append(("fused=True", {"fused": True}))
    options = {k: v for k, v in options.items() if k in names}  # e.g. no decoupled_weight_decay in torch 1.13
    return [(label, lambda ps, kw={**options, **v}: cls(ps, lr=1e-3, **kw)) for label, v in variants]


def ranger_variants():
    """Ranger: this file's Python Lookahead (k = 6) over each RAdam, with nestla::ranger's options."""
    out = []
    for label, make in torch_variants(torch.optim.RAdam, betas=(0.95, 0.999), eps=1e-5, decoupled_weight_decay=True):
        out.append((f"Lookahead(k=6) over RAdam {label}",
                    lambda ps, make=make: Lookahead(Base(make(ps), ps), k=6)))
    return out


# The optimizers timed against nestla's: (name in nestla_capi.cpp's registry, steps per cycle, torch variants).
# The options are nestla_capi's: lr 1e-3, otherwise the defaults (SGD: momentum 0.9). To add an optimizer, add it
# here and to nestla_capi.cpp's registry.
PAIRED = [
    ("SGD", 1, lambda: torch_variants(torch.optim.SGD, momentum=0.9)),
    ("Adam", 1, lambda: torch_variants(torch.optim.Adam)),
    ("AdamW", 1, lambda: torch_variants(torch.optim.AdamW)),
    ("RAdam", 1, lambda: torch_variants(torch.optim.RAdam)),
    ("NAdam", 1, lambda: torch_variants(torch.optim.NAdam)),
    ("Adamax", 1, lambda: torch_variants(torch.optim.Adamax)),
    ("Lion", 1, lambda: [("lion-pytorch (per tensor)", LionPerTensor), ("foreach (as timm)", LionForeach)]),
    ("Ranger", 6, ranger_variants),
    ("Adagrad", 1, lambda: torch_variants(torch.optim.Adagrad)),
    ("RMSprop", 1, lambda: torch_variants(torch.optim.RMSprop)),
    ("RMSprop-mc", 1, lambda: torch_variants(torch.optim.RMSprop, momentum=0.9, centered=True)),
    ("Adadelta", 1, lambda: torch_variants(torch.optim.Adadelta)),
    ("Rprop", 1, lambda: torch_variants(torch.optim.Rprop)),
]


class NestlaLib:
    """One build of benchmarks/nestla_capi.cpp."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.nestla_bench_create.restype = ctypes.c_void_p
        self.lib.nestla_bench_create.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_size_t,
                                                 ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
                                                 ctypes.POINTER(ctypes.c_size_t)]
        self.lib.nestla_bench_steps.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.lib.nestla_bench_destroy.argtypes = [ctypes.c_void_p]
        self.lib.nestla_bench_error.restype = ctypes.c_char_p
        self.lib.nestla_bench_names.restype = ctypes.c_char_p

    def names(self):
        return self.lib.nestla_bench_names().decode().split(",")


class NestlaStepper:
    """A nestla optimizer over tensors torch allocated (so both sides use the same allocator and pages)."""

    def __init__(self, lib, name, params, threads):
        self.lib, self.params = lib, params
        n = len(params)
        self.p = (ctypes.c_void_p * n)(*[q.data_ptr() for q in params])
        self.g = (ctypes.c_void_p * n)(*[q.grad.data_ptr() for q in params])
        self.sizes = (ctypes.c_size_t * n)(*[q.numel() for q in params])
        self.handle = lib.nestla_bench_create(name.encode(), threads, n, self.p, self.g, self.sizes)
        if not self.handle:
            raise RuntimeError(lib.nestla_bench_error().decode())

    def step(self):
        if self.lib.nestla_bench_steps(self.handle, 1) != 0:
            raise RuntimeError(self.lib.nestla_bench_error().decode())

    def close(self):
        if self.handle:
            self.lib.nestla_bench_destroy(self.handle)
            self.handle = None


def run_paired(libs, sets, threads_list, rotations, name_filter):
    """For each optimizer, set and thread count: nestla (each build) and every torch variant, one block of whole
    cycles each per rotation, every step timed. Returns per member the per-rotation seconds per step and the
    fastest step seen at each cycle position."""
    results = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        for set_name, shapes in sets.items():
            for name, cycle, variants in PAIRED:
                if name_filter not in name:
                    continue
                members = []  # (label, stepper)
                for label, lib in libs:
                    if name not in lib.names():
                        continue
                    members.append((f"nestla {label}", NestlaStepper(lib.lib, name, make_params(shapes), threads)))
                if not members:
                    continue
                for label, factory in variants():
                    params = make_params(shapes)
                    try:
                        opt = factory(params)
                        opt.step()
                    except (RuntimeError, ValueError, TypeError) as e:
                        print(f"skip {name} {label}: {str(e).splitlines()[0]}", file=sys.stderr)
                        continue
                    members.append((f"torch {label}", opt))
                block = max(cycle, 3)
                for _, m in members:  # state created, pages touched, whole cycles
                    for _ in range(2 * block):
                        m.step()
                per_rot = [[] for _ in members]
                best = [[math.inf] * block for _ in members]
                for _ in range(rotations):
                    for k, (_, m) in enumerate(members):
                        total = 0.0
                        for i in range(block):
                            t0 = time.perf_counter()
                            m.step()
                            dt = time.perf_counter() - t0
                            total += dt
                            best[k][i] = min(best[k][i], dt)
                        per_rot[k].append(total / block)
                out = {"set": set_name, "threads": threads, "optimizer": name, "rotations": rotations, "members": []}
                for k, (label, _) in enumerate(members):
                    out["members"].append({"label": label, "per_rotation": per_rot[k],
                                           "best_s_per_step": sum(best[k]) / block})
                    print(f"{set_name:9s} t{threads} {name:7s} {label:40s} {statistics.median(per_rot[k]) * 1e3:8.2f} ms",
                          file=sys.stderr)
                results.append(out)
                for _, m in members:
                    if isinstance(m, NestlaStepper):
                        m.close()
                del members
    return results


def time_steps(model, cycle, min_time, reps):
    """Seconds per step: the median over `reps` runs of whole outer cycles (each run >= min_time), and the
    sum over the cycle of the fastest step seen at each position, per step (other jobs only add time)."""
    for _ in range(max(cycle, 3)):  # creates the state; whole cycles keep runs aligned
        model.step()
    t0 = time.perf_counter()
    for _ in range(cycle):
        model.step()
    once = time.perf_counter() - t0
    cycles = max(1, math.ceil(min_time / max(once, 1e-9)))
    best = [math.inf] * cycle
    samples = []
    for _ in range(reps):
        total = 0.0
        for _ in range(cycles):
            for i in range(cycle):
                t0 = time.perf_counter()
                model.step()
                dt = time.perf_counter() - t0
                total += dt
                best[i] = min(best[i], dt)
        samples.append(total / (cycles * cycle))
    return statistics.median(samples), sum(best) / cycle, samples


def time_rotation(models, min_time, reps):
    """Like time_steps for single-step models, but the models take turns (one block of steps each per rotation),
    so that they share the machine's state; returns per model its median seconds per step and the median over
    rotations of its time over the first model's."""
    for m in models:
        for _ in range(3):
            m.step()
    t0 = time.perf_counter()
    models[0].step()
    block = max(1, math.ceil(min_time / 10 / max(time.perf_counter() - t0, 1e-9)))
    per = [[] for _ in models]
    for _ in range(reps * 10):
        for k, m in enumerate(models):
            t0 = time.perf_counter()
            for _ in range(block):
                m.step()
            per[k].append((time.perf_counter() - t0) / block)
    return [(statistics.median(p), statistics.median(x / y for x, y in zip(p, per[0]))) for p in per]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--filter", default="", help="only configs whose name contains this")
    ap.add_argument("--sets", nargs="+", default=["single", "resnet18"], help="parameter sets to run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--nestla-lib", action="append", default=[],
                    help="LABEL=PATH of a libnestla_capi.so: time PAIRED against it in rotation")
    ap.add_argument("--rotations", type=int, default=9, help="rotations of the paired groups")
    ap.add_argument("--paired-only", action="store_true", help="skip the unpaired torch.optim configurations")
    args = ap.parse_args()

    sets = {"single": [(N,)], "resnet18": read_shapes(args.shapes)}
    assert sum(math.prod(s) for s in sets["resnet18"]) == N and len(sets["resnet18"]) == 62
    results = []
    for threads in ([] if args.paired_only else args.threads):
        torch.set_num_threads(threads)
        for set_name, shapes in sets.items():
            if set_name not in args.sets:
                continue
            best_adam = None
            for name, factory in optimizer_configs():
                if args.filter not in name:
                    continue
                params = make_params(shapes)
                try:
                    model = Base(factory(params), params)
                    model.step()
                except (RuntimeError, ValueError) as e:  # e.g. fused=True on a CPU build without it
                    print(f"skip {name}: {str(e).splitlines()[0]}", file=sys.stderr)
                    continue
                sec, best, samples = time_steps(model, 1, args.min_time, args.reps)
                results.append({"set": set_name, "threads": threads, "config": name, "s_per_step": sec,
                                "best_s_per_step": best, "samples": samples})
                print(f"{set_name:9s} t{threads} {name:22s} {sec * 1e3:8.2f} ms (best {best * 1e3:.2f})",
                      file=sys.stderr)
                if name.startswith("Adam ") and (best_adam is None or sec < best_adam[1]):
                    best_adam = (name, sec, factory)
                del model, params
            if best_adam is None:
                continue
            # Gradient clipping before the fastest Adam of this set and thread count, in rotation with that
            # Adam alone: the ratio is paired (same seconds of the same process).
            names = [f"Adam+{label} ({best_adam[0]})" for label in ("clip_grad_norm_", "clip_grad_value_")]
            if any(args.filter in n for n in names):
                sets_ = [make_params(shapes) for _ in range(3)]
                models = [Base(best_adam[2](sets_[0]), sets_[0])]
                models += [Clipped(best_adam[2](ps), ps, how) for ps, how in zip(sets_[1:], ("norm", "value"))]
                timed = time_rotation(models, args.min_time, args.reps)
                for name, (sec, ratio) in zip(["rotation base: " + best_adam[0]] + names, timed):
                    results.append({"set": set_name, "threads": threads, "config": name, "s_per_step": sec,
                                    "best_s_per_step": sec, "ratio_to_adam": ratio})
                    print(f"{set_name:9s} t{threads} {name:22s} {sec * 1e3:8.2f} ms ({ratio:.3f}x Adam, paired)",
                          file=sys.stderr)
                del models, sets_
            # Lookahead over the fastest Adam of this set and thread count.
            for depth in (1, 2):
                name = f"LA{depth}-Adam ({best_adam[0]})"
                if args.filter not in name:
                    continue
                params = make_params(shapes)
                model = Base(best_adam[2](params), params)
                for _ in range(depth):
                    model = Lookahead(model)
                sec, best, samples = time_steps(model, K ** depth, args.min_time, args.reps)
                results.append({"set": set_name, "threads": threads, "config": name, "s_per_step": sec,
                                "best_s_per_step": best, "samples": samples})
                print(f"{set_name:9s} t{threads} {name:22s} {sec * 1e3:8.2f} ms (best {best * 1e3:.2f})",
                      file=sys.stderr)
                del model, params
    paired = []
    if args.nestla_lib:
        libs = [(spec.split("=", 1)[0], NestlaLib(spec.split("=", 1)[1])) for spec in args.nestla_lib]
        paired = run_paired(libs, sets, args.threads, args.rotations, args.filter)
    with open(args.out, "w") as f:
        json.dump({"torch": torch.__version__, "python": sys.version.split()[0], "results": results,
                   "paired": paired}, f, indent=1)


if __name__ == "__main__":
    main()
