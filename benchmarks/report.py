#!/usr/bin/env python3
"""Turns nestla_bench's and torch_optim_bench.py's JSON into the markdown tables of benchmarks/RESULTS.md."""
import argparse
import json
import re
import statistics

SETS = ("single", "resnet18")
THREADS = (1, 2)
# Optimizers of the steps tables, in nestla_bench's order: whatever it measured (steps/<name>/<set>/t<threads>).
def step_opts(med):
    out = []
    for key in med:
        m = re.match(r"steps/([^/]+)/", key)
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def is_base(opt):
    """A base optimizer (not a Lookahead nesting or a preset over one)."""
    return not opt.startswith("LA") and opt != "Ranger"

# Amortized byte floors of nesting, k = 5 at every level (see bytes_per_step in optimizer_bench.cpp).
def floor(base_bytes, depth, k=5):
    steps = k ** depth
    total = steps * base_bytes + sum(steps // k ** (level + 1) * 8 for level in range(depth))
    return total / (steps * base_bytes)


GOAL_NEST = {2: 1.08, 3: 1.09}


def load_medians(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median") == "median":
            name = b.get("run_name", b["name"])
            # Drop Google Benchmark's suffixes: /min_time:..., /iterations:..., /repeats:..., /real_time.
            name = re.sub(r"(/(min_time|iterations|repeats):[^/]*|/real_time)+$", "", name)
            out[name] = b
    return data.get("context", {}), out


def fmt(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flavour", action="append", required=True, help="LABEL=PATH to nestla_bench JSON")
    ap.add_argument("--torch", action="append", default=[], help="torch_optim_bench.py JSON")
    args = ap.parse_args()

    flavours = []
    for spec in args.flavour:
        label, path = spec.rsplit("=", 1)
        ctx, med = load_medians(path)
        flavours.append((label, med))
    goals = []  # (goal, flavour, where, value, ok)

    print("### Memory roofline and Adam's compute floor\n")
    print("Median of the repetitions. Roofline loops are built with `-O3 -march=native` in both flavours; the "
          "compute floor is nestla's own Adam loop over an L1-resident block, built with the flavour's flags "
          "(every optimizer's in the next table).\n")
    print("| flavour | threads | copy GB/s | Adam-shaped GB/s | Adam-shaped ms | Adam compute floor ms (1 thread) |")
    print("|---|---|---|---|---|---|")
    for label, med in flavours:
        for t in THREADS:
            copy = med.get(f"roofline/copy/t{t}", {})
            roof = med.get(f"roofline/adam_shaped/t{t}", {})
            comp = med.get("compute/Adam/t1", {})
            print(f"| {label} | {t} | {fmt(copy.get('GBps', 0) / 1e9 if copy else None, '.1f')} | "
                  f"{fmt(roof.get('GBps', 0) / 1e9 if roof else None, '.1f')} | "
                  f"{fmt(roof.get('s_per_step', 0) * 1e3 if roof else None)} | "
                  f"{fmt(comp.get('s_per_step', 0) * 1e3 if comp else None)} |")
    print()

    rules = []
    for label, med in flavours:
        for key in med:
            m = re.match(r"compute/([^/]+)/t1$", key)
            if m and m.group(1) not in rules:
                rules.append(m.group(1))
    if rules:
        print("### Compute floors (one thread, data in the L1 cache, scaled to N elements)\n")
        print("ms for N = 11.17M elements of each rule's own update loop with no memory traffic (the functor it "
              "prepares at t = 1000), against the time the Adam-shaped roofline needs for the bytes that rule must "
              "move (one thread). A floor well under the memory time leaves the step memory-bound.\n")
        print("| flavour | rule | compute floor ms | bytes/element | roofline ms for those bytes (1 thread) |")
        print("|---|---|---|---|---|")
        for label, med in flavours:
            roof = med.get("roofline/adam_shaped/t1")
            for r in rules:
                c = med.get(f"compute/{r}/t1")
                if not c:
                    continue
                per_elem = c["bytes_per_step"] / 11173962
                mem = roof["s_per_step"] * per_elem / 28 * 1e3 if roof else None
                print(f"| {label} | {r} | {c['s_per_step'] * 1e3:.2f} | {per_elem:.0f} | {fmt(mem)} |")
        print()

    nestla_ms = {}  # (flavour, set, threads, opt) -> ms per step, std::vector
    nestla_best = {}
    for label, med in flavours:
        print(f"### Steps, {label}\n")
        print("Time per step (std::vector; median over rotations), effective GB/s of the counted bytes, that as a "
              "share of the Adam-shaped roofline timed in rotation with it (same seconds, same threads) and of the "
              "copy roofline, and the Eigen and xtensor containers' time over std::vector's (same rotations). "
              "Shares and ratios are medians of per-rotation ratios; in parentheses, the same from the fastest "
              "step seen at each position of the cycle (other jobs on the machine only add time).\n")
        print("| optimizer | set | threads | ms/step | bytes/step | GB/s | % Adam-shaped roofline | % copy roofline "
              "| Eigen / vector | xtensor / vector | rotations |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for opt in step_opts(med):
            for s in SETS:
                for t in THREADS:
                    b = med.get(f"steps/{opt}/{s}/t{t}")
                    if not b:
                        continue
                    ms = b["s_per_step:vector"] * 1e3
                    nestla_ms[(label, s, t, opt)] = ms
                    nestla_best[(label, s, t, opt)] = b["best_s_per_step:vector"] * 1e3
                    gbps = b["GBps:vector"]
                    byte_ratio = b["bytes_per_step:vector"] / b["bytes_per_step:roofline"]
                    roof = byte_ratio / b["ratio0:vector"]
                    copy = med.get(f"roofline/copy/t{t}")
                    copy_share = gbps / (copy["GBps"] / 1e9) if copy else None
                    eig, xt = b["ratio1:eigen"], b["ratio1:xtensor"]
                    bv = b["best_s_per_step:vector"]
                    best_roof = byte_ratio * b["best_s_per_step:roofline"] / bv
                    best_eig = b["best_s_per_step:eigen"] / bv
                    best_xt = b["best_s_per_step:xtensor"] / bv
                    print(f"| {opt} | {s} | {t} | {ms:.2f} ({bv * 1e3:.2f}) | {b['bytes_per_step:vector'] / 1e6:.0f} MB | "
                          f"{gbps:.1f} | {roof * 100:.0f}% ({best_roof * 100:.0f}%) | "
                          f"{fmt(copy_share * 100 if copy_share else None, '.0f')}% | "
                          f"{eig:.3f} ({best_eig:.3f}) | {xt:.3f} ({best_xt:.3f}) | {b['rotations']:.0f} |")
                    if is_base(opt):
                        goals.append(("step >= 90% of Adam-shaped roofline", label, f"{opt} {s} t{t}",
                                      f"{roof * 100:.0f}% ({best_roof * 100:.0f}%)", roof >= 0.90))
                    worst = max(abs(eig - 1), abs(xt - 1))
                    goals.append(("container within 2% of std::vector", label, f"{opt} {s} t{t}",
                                  f"Eigen {eig:.3f} ({best_eig:.3f}), xtensor {xt:.3f} ({best_xt:.3f})",
                                  worst <= 0.02))
        print()

    rows = [(label, t, med.get(f"dispatch/Adam/single/t{t}")) for label, med in flavours for t in THREADS]
    if any(b for _, _, b in rows):
        print("### Adam with and without the AVX-512 dispatch (one tensor of N floats)\n")
        print("nestla's Adam step, and the update loop it had before (xsimd's batch width for the build's flags), "
              "each as a share of the Adam-shaped roofline timed in the same rotations (fastest steps in "
              "parentheses).\n")
        print("| flavour | threads | nestla ms/step | nestla % roofline | xsimd-only ms/step | xsimd-only % roofline |")
        print("|---|---|---|---|---|---|")
        for label, t, b in rows:
            if not b:
                continue
            def share(m):
                return (f"{100 / b['ratio0:' + m]:.0f}% "
                        f"({100 * b['best_s_per_step:roofline'] / b['best_s_per_step:' + m]:.0f}%)")
            print(f"| {label} | {t} | {b['s_per_step:vector'] * 1e3:.2f} | {share('vector')} | "
                  f"{b['s_per_step:xsimd_only'] * 1e3:.2f} | {share('xsimd_only')} |")
        print()

    clip_members = (("clip_norm", "clip_grad_norm, coefficient < 1"), ("clip_norm_coef1", "clip_grad_norm, coefficient 1"),
                    ("clip_value", "clip_grad_value"), ("torch_way", "norm, g *= c in place, then the step"))
    rows = [(label, t, med.get(f"clip/Adam/resnet18/t{t}")) for label, med in flavours for t in THREADS]
    if any(b for _, _, b in rows):
        print("### Gradient clipping: Adam on the ResNet-18 set with and without it\n")
        print("Each way's time per step over plain Adam's, timed in rotation (median of per-rotation ratios; in "
              "parentheses from the fastest steps); the byte floor is counted bytes over Adam's 28 per element.\n")
        print("| flavour | threads | Adam ms/step | " + " | ".join(f"{d} (floor)" for _, d in clip_members) +
              " | rotations |")
        print("|---|---|---|" + "---|" * len(clip_members) + "---|")
        for label, t, b in rows:
            if not b:
                continue
            cells = []
            for m, _ in clip_members:
                best = b[f"best_s_per_step:{m}"] / b["best_s_per_step:Adam"]
                floor_m = b[f"bytes_per_step:{m}"] / b["bytes_per_step:Adam"]
                cells.append(f"{b['ratio0:' + m]:.3f} ({best:.3f}) ({floor_m:.3f})")
            print(f"| {label} | {t} | {b['s_per_step:Adam'] * 1e3:.2f} | " + " | ".join(cells) +
                  f" | {b['rotations']:.0f} |")
        print()

    if any(key.startswith("nesting/") for _, med in flavours for key in med):
        print("### Amortized nesting cost (std::vector, k = 5 at every level, whole outer cycles)\n")
        print("Each depth's time per step over the base optimizer's, all timed in rotation (in parentheses: from "
              "the fastest blocks); the byte floor is the counted bytes' ratio.\n")
        print("| flavour | base | set | threads | base ms/step | LA1 | LA2 (goal Adam 1.08) | LA3 (goal Adam 1.09) | "
              "byte floors LA1 / LA2 / LA3 | rotations |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, med in flavours:
            for base, bb in (("Adam", 28), ("SGD", 20)):
                for s in SETS:
                    for t in THREADS:
                        b = med.get(f"nesting/{base}/{s}/t{t}")
                        if not b:
                            continue
                        base_s = b[f"s_per_step:{base}"]
                        r = [b[f"ratio0:LA{d}"] for d in (1, 2, 3)]
                        rb = [b[f"best_s_per_step:LA{d}"] / b[f"best_s_per_step:{base}"] for d in (1, 2, 3)]
                        floors = " / ".join(f"{floor(bb, d):.3f}" for d in (1, 2, 3))
                        cells = " | ".join(f"{r[i]:.3f} ({rb[i]:.3f})" for i in range(3))
                        print(f"| {label} | {base} | {s} | {t} | {base_s * 1e3:.2f} | {cells} | {floors} | "
                              f"{b['rotations']:.0f} |")
                        if base == "Adam":
                            for d in (2, 3):
                                goals.append((f"LA{d}<Adam> <= {GOAL_NEST[d]}x Adam", label, f"{s} t{t}",
                                              f"{r[d - 1]:.3f} ({rb[d - 1]:.3f})", r[d - 1] <= GOAL_NEST[d]))
        print()

    for path in args.torch:
        with open(path) as f:
            tr = json.load(f)
        if not tr["results"]:
            continue
        print(f"### PyTorch {tr['torch']} (Python {tr['python']}), CPU, huge-page malloc\n")
        print("ms per step (median; in parentheses from the fastest step at each cycle position); speed-up = "
              "torch's time over nestla's for the same optimizer, tensors and threads (nestla: std::vector), "
              "median over median (best over best). nestla and torch ran minutes apart.\n")
        flav = [label for label, _ in flavours]
        print("| set | threads | torch config | torch ms/step | " + " | ".join(f"speed-up {f}" for f in flav) + " |")
        print("|---|---|---|---|" + "---|" * len(flav))
        for s in SETS:
            for t in THREADS:
                rows = [r for r in tr["results"] if r["set"] == s and r["threads"] == t]
                best_adam = min((r for r in rows if r["config"].startswith("Adam ")), key=lambda r: r["s_per_step"],
                                default=None)
                for r in rows:
                    opt = r["config"].split()[0]
                    ms, bms = r["s_per_step"] * 1e3, r["best_s_per_step"] * 1e3
                    ups = []
                    for f in flav:
                        n, nb = nestla_ms.get((f, s, t, opt)), nestla_best.get((f, s, t, opt))
                        ups.append(f"{ms / n:.1f}x ({bms / nb:.1f}x)" if n else "n/a")
                    mark = " (fastest Adam)" if r is best_adam else ""
                    print(f"| {s} | {t} | {r['config']}{mark} | {ms:.2f} ({bms:.2f}) | " + " | ".join(ups) + " |")
                if best_adam:
                    for f in flav:
                        n = nestla_ms.get((f, s, t, "Adam"))
                        if n:
                            up = best_adam["s_per_step"] * 1e3 / n
                            upb = best_adam["best_s_per_step"] * 1e3 / nestla_best[(f, s, t, "Adam")]
                            goals.append((f">= 2x fastest torch {tr['torch']} Adam", f, f"{s} t{t}",
                                          f"{up:.1f}x ({upb:.1f}x)", up >= 2))
        print()

    for path in args.torch:
        with open(path) as f:
            tr = json.load(f)
        if not tr.get("paired"):
            continue
        print(f"### Paired with PyTorch {tr['torch']} (Python {tr['python']}): one process, in rotation\n")
        print("nestla (through benchmarks/nestla_capi.cpp, on tensors torch allocated) and every torch implementation "
              "of the same optimizer, one block of whole cycles each per rotation, in the same seconds; torch's "
              "threads as nestla's. ms per step: median over rotations. Speed-up: the fastest torch "
              "implementation's time over nestla's, median of the per-rotation ratios (in parentheses: from the "
              "fastest step at each cycle position).\n")
        flav = list(dict.fromkeys(m["label"] for g in tr["paired"] for m in g["members"]
                                  if m["label"].startswith("nestla ")))
        print("| optimizer | set | threads | " + " | ".join(f"{f} ms" for f in flav) +
              " | torch implementations, ms | fastest torch | " + " | ".join(f"speed-up {f}" for f in flav) +
              " | rotations |")
        print("|---|---|---|" + "---|" * len(flav) + "---|---|" + "---|" * len(flav) + "---|")
        for g in tr["paired"]:
            ms = {m["label"]: m for m in g["members"]}
            torch_ms = [m for m in g["members"] if m["label"].startswith("torch ")]
            if not torch_ms:
                continue
            fastest = min(torch_ms, key=lambda m: statistics.median(m["per_rotation"]))
            cells_n, ups = [], []
            for f in flav:
                m = ms.get(f)
                if not m:
                    cells_n.append("n/a")
                    ups.append("n/a")
                    continue
                cells_n.append(f"{statistics.median(m['per_rotation']) * 1e3:.2f}")
                r = statistics.median(a / b for a, b in zip(fastest["per_rotation"], m["per_rotation"]))
                rb = fastest["best_s_per_step"] / m["best_s_per_step"]
                ups.append(f"{r:.2f}x ({rb:.2f}x)")
                if f == flav[0]:
                    goals.append((f"faster than torch {tr['torch']}'s fastest", f, f"{g['optimizer']} {g['set']} "
                                  f"t{g['threads']}", f"{r:.2f}x ({rb:.2f}x)", r >= 1))
            impls = "; ".join(f"{m['label'][6:]} {statistics.median(m['per_rotation']) * 1e3:.2f}" for m in torch_ms)
            print(f"| {g['optimizer']} | {g['set']} | {g['threads']} | " + " | ".join(cells_n) + f" | {impls} | "
                  f"{fastest['label'][6:]} | " + " | ".join(ups) + f" | {g['rotations']} |")
        print()

    print("### Goals\n")
    print("| goal | flavour | case | value | met |")
    print("|---|---|---|---|---|")
    for g, f, where, value, ok in goals:
        print(f"| {g} | {f} | {where} | {value} | {'yes' if ok else '**no**'} |")
    met = sum(1 for g in goals if g[4])
    print(f"\n{met} of {len(goals)} goal checks met.")


if __name__ == "__main__":
    main()
