#!/usr/bin/python3
"""Generate tests/data/distributed.json: N workers of a distributed nestla optimizer, simulated in one process.

Run with Debian's Python and PyTorch (1.13, CPU), as tools/make_golden.py:

    /usr/bin/python3 tools/make_distributed_golden.py

The output is deterministic (portable PyTorch kernels, one thread, float64).

What it simulates (docs/semantics.md, "Distributed Lookahead")
---------------------------------------------------------------
Each worker holds its own parameters and its own copy of the optimizer: the
torch.optim base optimizer and the Lookahead reference of make_golden.py (outer
momentum there is torch.optim.SGD on the slow weights, as in DiLoCo). Each
worker has its own loss (its own coefficients: its shard of the data). Every
level l has groups of workers ("groups"[l], a partition of the workers);
level 0 is the base optimizer, levels 1..d the Lookahead levels inside out.

  first step:  every worker's theta <- theta of worker 0 (the outermost group's first worker)
  each step:   each worker's gradient at its own theta; with groups of several
               workers at level 0, gradient <- sum over the group / its size
               (summed in worker order); the base step on every worker
  a level that syncs (same steps on every worker, innermost first): for each
               of its groups, x = sum over the group of (theta_w - phi) / size
               and, for pullback, m = sum of the first moments / size; every
               worker of the group syncs with x (phi <- phi + alpha x, or the
               outer SGD step with gradient -x) and the pullback mean
A group of one worker syncs on its own theta, as the single-process optimizer.

Two cases come from independent definitions instead, for the contract's identities:
  "periodic_averaging": local SGD, every k steps theta_w <- mean of theta
      (PyTorch's PostLocalSGDOptimizer with PeriodicModelAverager(period=k)),
      which Lookahead(k, alpha=1) over SGD equals;
  "hierarchical_averaging": every period p of {2: pairs, 4: all}, at steps
      that are multiples of p, the largest such p averages theta within its
      groups (PyTorch's HierarchicalModelAverager), which nested Lookahead
      with alpha = 1 equals.

A case with "resume" continues after step "at" (right after an outermost sync)
as a new job of resume.workers workers, each a copy of worker 0's whole state
(optimizer and parameters), with its own groups and losses: elastic resume.

JSON schema (floats written with repr: exact float64)
------------------------------------------------------
[ { "name": str, "workers": N,
    "optimizer", "options", "lookahead": as in golden.json (make_golden.py),
    "groups": [ [[w, ...], ...] per level 0..d ],   # a partition of range(N) per level
    "shapes": [7, 12, 1],
    "init":  [ per worker: [[...], [...], [...]] ],  # before the first step's broadcast
    "steps": [ { "grad":   [ per worker: gradient fed at this step ],
                 "params": [ per worker: parameters after the step ],
                 "syncs":  [ per Lookahead level: did it sync ] }, ... ],
    "resume": { "at": int, "workers": N', "groups": [...],     # only in elastic cases
                "steps": [ same as steps, for the N' workers ] } }, ... ]
"""

import copy
import os
import pathlib
import sys

os.environ["ATEN_CPU_CAPABILITY"] = "default"  # must precede `import torch`

import json  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_golden as mg  # noqa: E402

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)

SEED = 20240917
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "distributed.json"


def worker_problem(w):
    """Worker w's initial parameters (all but worker 0's replaced by the broadcast) and loss."""
    gen = torch.Generator().manual_seed(SEED + 101 * w)
    init = [torch.randn(s, generator=gen) for s in mg.SHAPES]
    coef = []
    for s in mg.SHAPES:
        a = 0.5 + torch.rand(s, generator=gen)
        b = 0.2 + 0.8 * torch.rand(s, generator=gen)
        c = 0.5 + 2.0 * torch.rand(s, generator=gen)
        coef.append((a, b, c))
    return init, coef


class Worker:
    def __init__(self, kind, options, levels, init, coef):
        self.params = [t.clone().requires_grad_(True) for t in init]
        self.coef = coef
        self.top = mg.build(kind, options, levels, self.params)
        self.base = self.top if isinstance(self.top, mg.Base) else self.top.base
        self.levels = mg.all_levels(self.top)  # innermost first


def mean(tensor_lists):
    """Per tensor: the sum over the lists in order, divided by their count."""
    n = len(tensor_lists)
    return [_sum([ts[i] for ts in tensor_lists]) / n for i in range(len(tensor_lists[0]))]


def _sum(ts):
    acc = ts[0].clone()
    for t in ts[1:]:
        acc = acc + t
    return acc


def flat(ts):
    return [t.detach().reshape(-1).tolist() for t in ts]


def broadcast_from_first(workers):
    with torch.no_grad():
        for w in workers[1:]:
            for p, q in zip(w.params, workers[0].params):
                p.copy_(q)


def dist_step(workers, groups):
    """One step of every worker. groups[l]: the partition of workers at level l."""
    grads = [mg.loss_grads(w.params, w.coef) for w in workers]
    fed = [[g.clone() for g in gs] for gs in grads]
    if any(len(g) > 1 for g in groups[0]):
        for grp in groups[0]:
            m = mean([grads[w] for w in grp])
            for w in grp:
                grads[w] = [t.clone() for t in m]
    for w, g in zip(workers, grads):
        w.base.step(g)
    nlev = len(workers[0].levels)
    synced = [False] * nlev
    for i in range(nlev):
        for w in workers:
            w.levels[i].cycles += 1
        if workers[0].levels[i].cycles % workers[0].levels[i].k != 0:
            break
        synced[i] = True
        for grp in groups[i + 1]:
            lv = [workers[w].levels[i] for w in grp]
            with torch.no_grad():
                if len(grp) == 1:
                    lv[0].sync()
                    continue
                x = mean([[p.data - phi for p, phi in zip(workers[w].params, lv[0].phi)] for w in grp])
                m_mean = None
                if lv[0].policy == "pullback":
                    m_mean = mean([[m.clone() for m in workers[w].base.first_moments()] for w in grp])
                for L in lv:
                    L.sync(x, m_mean)
    return fed, synced


def record(fed, workers, synced):
    return {"grad": [flat(g) for g in fed], "params": [flat(w.params) for w in workers], "syncs": synced}


def run_case(name, n, kind, options, levels, groups, steps, resume=None):
    problems = [worker_problem(w) for w in range(n)]
    workers = [Worker(kind, options, levels, init, coef) for init, coef in problems]
    broadcast_from_first(workers)
    for w in workers:
        for L in reversed(w.levels):
            L.init_slow()
    out = {"name": name, "workers": n, "optimizer": kind, "options": options, "lookahead": levels,
           "groups": groups, "shapes": [t.numel() for t in problems[0][0]],
           "init": [flat(init) for init, _ in problems], "steps": []}
    for _ in range(steps):
        fed, synced = dist_step(workers, groups)
        out["steps"].append(record(fed, workers, synced))
    if resume:
        n2, groups2, steps2 = resume["workers"], resume["groups"], resume["steps"]
        new = []
        for w in range(n2):
            c = copy.deepcopy(workers[0])
            c.coef = worker_problem(50 + w)[1]  # the new job's shards
            new.append(c)
        out["resume"] = {"at": steps, "workers": n2, "groups": groups2, "steps": []}
        for _ in range(steps2):
            fed, synced = dist_step(new, groups2)
            out["resume"]["steps"].append(record(fed, new, synced))
    return out


def run_periodic_averaging(name, n, lr, k, steps):
    """PostLocalSGDOptimizer + PeriodicModelAverager(period=k): local SGD, then every k steps the mean."""
    problems = [worker_problem(w) for w in range(n)]
    params = [[t.clone() for t in problems[0][0]] for _ in range(n)]
    out = {"name": name, "workers": n, "optimizer": "sgd", "options": mg.sgd_opts(lr),
           "lookahead": [mg.level(k, 1.0)], "groups": [[[w] for w in range(n)], [list(range(n))]],
           "shapes": [t.numel() for t in problems[0][0]], "init": [flat(init) for init, _ in problems], "steps": []}
    for s in range(1, steps + 1):
        fed = [mg.loss_grads(p, coef) for p, (_, coef) in zip(params, problems)]
        params = [[t - lr * g for t, g in zip(p, gs)] for p, gs in zip(params, fed)]
        if s % k == 0:
            avg = mean(params)
            params = [[t.clone() for t in avg] for _ in range(n)]
        out["steps"].append({"grad": [flat(g) for g in fed], "params": [flat(p) for p in params],
                             "syncs": [s % k == 0]})
    return out


def run_hierarchical_averaging(name, lr, steps):
    """HierarchicalModelAverager({2: groups of 2, 4: all 4}) after local SGD steps."""
    n = 4
    periods = [(4, [[0, 1, 2, 3]]), (2, [[0, 1], [2, 3]])]  # largest period first
    problems = [worker_problem(w) for w in range(n)]
    params = [[t.clone() for t in problems[0][0]] for _ in range(n)]
    out = {"name": name, "workers": n, "optimizer": "sgd", "options": mg.sgd_opts(lr),
           "lookahead": [mg.level(2, 1.0), mg.level(2, 1.0)],
           "groups": [[[0], [1], [2], [3]], [[0, 1], [2, 3]], [[0, 1, 2, 3]]],
           "shapes": [t.numel() for t in problems[0][0]], "init": [flat(init) for init, _ in problems], "steps": []}
    for s in range(1, steps + 1):
        fed = [mg.loss_grads(p, coef) for p, (_, coef) in zip(params, problems)]
        params = [[t - lr * g for t, g in zip(p, gs)] for p, gs in zip(params, fed)]
        for period, groups in periods:
            if s % period == 0:
                for grp in groups:
                    avg = mean([params[w] for w in grp])
                    for w in grp:
                        params[w] = [t.clone() for t in avg]
                break
        out["steps"].append({"grad": [flat(g) for g in fed], "params": [flat(p) for p in params],
                             "syncs": [s % 2 == 0, s % 4 == 0]})
    return out


def each(n):
    return [[w] for w in range(n)]


def cases():
    lv = mg.level
    adam = mg.adam_opts(1e-2)
    adamw = mg.adam_opts(1e-2, weight_decay=0.1)
    sgd_m = mg.sgd_opts(0.05, momentum=0.9)
    sgd_n = mg.sgd_opts(0.05, momentum=0.9, nesterov=True)
    all4, pairs, all3 = [[0, 1, 2, 3]], [[0, 1], [2, 3]], [[0, 1, 2]]
    out = [
        run_case("ddp_sgd_nesterov_4", 4, "sgd", sgd_n, [], [all4], 30),
        run_case("ddp_adam_3", 3, "adam", adam, [], [all3], 30),
        run_case("ddp_pairs_lookahead_all_adam_4", 4, "adam", adam, [lv(3, 0.5)], [pairs, all4], 30),
        run_case("lookahead_all_adam_4", 4, "adam", adam, [lv(5, 0.5)], [each(4), all4], 30),
        run_case("nested_pairs_all_adam_4", 4, "adam", adam, [lv(3, 0.5), lv(2, 0.8)], [each(4), pairs, all4], 36),
        run_case("nested_pullback_both_sgd_4", 4, "sgd", sgd_m, [lv(3, 0.5, "pullback"), lv(2, 0.8, "pullback")],
                 [each(4), pairs, all4], 36),
        run_case("unequal_groups_3", 3, "adam", adam, [lv(2, 0.5, "pullback"), lv(3, 0.7, "reset")],
                 [each(3), [[0, 1], [2]], all3], 36),
        run_case("diloco_adamw_4", 4, "adamw", adamw, [lv(5, 0.7, outer_momentum=0.9, outer_nesterov=True)],
                 [each(4), all4], 30),
        run_case("diloco_nested_pairs_all_adamw_4", 4, "adamw", adamw,
                 [lv(3, 0.5, "pullback", outer_momentum=0.7), lv(2, 0.7, outer_momentum=0.9, outer_nesterov=True)],
                 [each(4), pairs, all4], 36),
        run_case("every_level_pullback_2", 2, "sgd", sgd_m, [lv(2, 0.5, "pullback"), lv(2, 0.6, "pullback")],
                 [[[0, 1]], [[0, 1]], [[0, 1]]], 24),
        run_periodic_averaging("periodic_averaging_4", 4, 0.05, 3, 30),
        run_hierarchical_averaging("hierarchical_averaging_4", 0.05, 32),
        run_case("elastic_nested_4_to_3", 4, "adam", adam, [lv(3, 0.5, "pullback"), lv(2, 0.8, "pullback")],
                 [each(4), pairs, all4], 12,
                 resume={"workers": 3, "groups": [each(3), [[0, 1], [2]], all3], "steps": 18}),
    ]
    return out


def dumps(data):
    """Compact JSON, one step per line."""
    def j(x):
        return json.dumps(x, separators=(",", ":"))
    out = []
    for c in data:
        head = ",\n".join(f" {j(k)}:{j(v)}" for k, v in c.items() if k not in ("steps", "resume"))
        steps = ",\n".join("  " + j(st) for st in c["steps"])
        body = "{\n" + head + ",\n \"steps\":[\n" + steps + "\n ]"
        if "resume" in c:
            r = c["resume"]
            rhead = ",".join(f"{j(k)}:{j(v)}" for k, v in r.items() if k != "steps")
            rsteps = ",\n".join("  " + j(st) for st in r["steps"])
            body += ",\n \"resume\":{" + rhead + ",\"steps\":[\n" + rsteps + "\n ]}"
        out.append(body + "}")
    text = "[\n" + ",\n".join(out) + "\n]\n"
    assert json.loads(text) == data
    return text


def main():
    data = cases()
    names = [c["name"] for c in data]
    assert len(set(names)) == len(names)
    text = dumps(data)
    OUT.write_text(text)
    print(f"wrote {len(data)} cases, {len(text)} bytes to {OUT}")


if __name__ == "__main__":
    main()
