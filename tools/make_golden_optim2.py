#!/usr/bin/env python3
"""Generate tests/data/golden_optim2.json: torch.optim trajectories of Adagrad, RMSprop, Adadelta and Rprop.

Run with PyTorch 2.x from PyPI (the JSON records the version it was made with):

    /work/venv-torch/bin/python tools/make_golden_optim2.py

Deterministic (byte-identical output on every run): float64, one thread, and
PyTorch's CPU kernels pinned to the portable code path (no fused multiply-adds),
as tools/make_golden.py does; the problem (three tensors of 7, 3x4 and 1
elements, the nonconvex loss sum(a p^2/2 + b sin(c p)), gradients by autograd
and recorded) and the Lookahead reference are taken from that script.

The base optimizers are torch.optim.Adagrad / RMSprop / Adadelta / Rprop with
foreach=False (their single-tensor code paths). Every option is exercised,
alone and combined; some cases use torch parameter groups (their own lr and,
where the optimizer has one, weight_decay), and some run under Lookahead: the
reference's first moment is RMSprop's state['momentum_buffer'] (nestla's
rmsprop_rule::first_moment); the other three have none, so they run with the
keep policy only.

Bits: PyTorch 2.15's float64 square root on the CPU is not always correctly
rounded (about 1% of inputs differ from the correctly rounded result in the
last bit; PyTorch 1.13's is exact), so nestla, whose sqrt is, agrees with these
trajectories to ~1e-15, not bit for bit. Run with Debian's PyTorch 1.13
(/usr/bin/python3) into a scratch copy, the same cases agree bit for bit except
centered RMSprop, whose grad_avg 1.13 updates with mul/add instead of lerp.

JSON schema: {"generator": str, "torch": str, "cases": [case, ...]} where a
case is as in tools/make_golden.py, with
    "optimizer": "adagrad" | "rmsprop" | "adadelta" | "rprop",
    "options":   every torch option by its torch name (etas and step_sizes as
                 [a, b] lists), all keys present,
    "groups":    [{"tensors": [int, ...], "lr": float, "weight_decay": float?}, ...]
                 tensors (by index) in their own torch param group; the rest
                 stay in the first group with "options". [] for none.
"""

import os
import pathlib
import sys

os.environ["ATEN_CPU_CAPABILITY"] = "default"  # must precede `import torch`

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_golden as mg  # noqa: E402  (sets float64 and one thread)

import torch  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "golden_optim2.json"

KINDS = {
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta,
    "rprop": torch.optim.Rprop,
}


def torch_options(options):
    o = dict(options)
    for k in ("etas", "step_sizes"):
        if k in o:
            o[k] = tuple(o[k])
    return o


class Base(mg.Base):
    """Depth 0 for the Lookahead reference: the torch.optim optimizer, with param groups."""

    def __init__(self, kind, options, groups, params):
        self.params = params
        grouped = {i for g in groups for i in g["tensors"]}
        param_groups = [{"params": [p for i, p in enumerate(params) if i not in grouped]}]
        for g in groups:
            extra = {k: v for k, v in g.items() if k != "tensors"}
            param_groups.append({"params": [params[i] for i in g["tensors"]], **extra})
        self.opt = KINDS[kind](param_groups, foreach=False, **torch_options(options))
        self.buffer_key = "momentum_buffer" if kind == "rmsprop" and options["momentum"] > 0 else None

    def first_moments(self):
        assert self.buffer_key is not None, "a momentum policy on an optimizer without a first moment"
        return super().first_moments()


def run_case(name, kind, options, levels, groups, init, coef, steps=mg.STEPS):
    params = [t.clone().requires_grad_(True) for t in init]
    opt = Base(kind, options, groups, params)
    for lv in levels:  # innermost first
        opt = mg.Lookahead(opt, lv["k"], lv["alpha"], lv["momentum"])
    lvls = mg.all_levels(opt)
    record = []
    for _ in range(steps):
        grads = mg.loss_grads(params, coef)
        cycle = opt.step(grads)
        record.append({"grad": mg.flat(grads), "params": mg.flat(params), "cycle": bool(cycle),
                       "syncs": [bool(lv.synced) for lv in lvls]})
    return {"name": name, "optimizer": kind, "options": options, "groups": groups, "lookahead": levels,
            "shapes": [t.numel() for t in init], "init": mg.flat(init), "steps": record}


def adagrad(lr=0.1, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False):
    return {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value, "eps": eps, "maximize": maximize}


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    return {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "momentum": momentum,
            "centered": centered, "maximize": maximize}


def adadelta(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    return {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize}


def rprop(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), maximize=False):
    return {"lr": lr, "etas": list(etas), "step_sizes": list(step_sizes), "maximize": maximize}


def cases():
    level = mg.level
    rms_m = rmsprop(momentum=0.9)
    rms_mc = rmsprop(momentum=0.5, centered=True, alpha=0.9)
    groups_wd = [{"tensors": [1], "lr": 0.03, "weight_decay": 0.2}, {"tensors": [2], "lr": 0.5}]
    out = [
        ("adagrad", "adagrad", adagrad(), [], []),
        ("adagrad_lr_decay", "adagrad", adagrad(lr_decay=0.05), [], []),
        ("adagrad_initial_accumulator", "adagrad", adagrad(initial_accumulator_value=0.5), [], []),
        ("adagrad_weight_decay", "adagrad", adagrad(weight_decay=0.05), [], []),
        ("adagrad_eps", "adagrad", adagrad(eps=1e-2), [], []),
        ("adagrad_maximize", "adagrad", adagrad(lr=0.05, maximize=True), [], []),
        ("adagrad_all", "adagrad", adagrad(lr=0.2, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.3,
                                           eps=1e-6, maximize=True), [], []),
        ("adagrad_groups", "adagrad", adagrad(lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
         [], groups_wd),
        ("rmsprop", "rmsprop", rmsprop(), [], []),
        ("rmsprop_alpha", "rmsprop", rmsprop(alpha=0.9), [], []),
        ("rmsprop_eps", "rmsprop", rmsprop(eps=1e-2), [], []),
        ("rmsprop_weight_decay", "rmsprop", rmsprop(weight_decay=0.05), [], []),
        ("rmsprop_momentum", "rmsprop", rmsprop(momentum=0.9), [], []),
        ("rmsprop_centered", "rmsprop", rmsprop(centered=True), [], []),
        # alpha < 0.5: torch's lerp of grad_avg takes its other form (weight 1 - alpha >= 0.5).
        ("rmsprop_centered_alpha_low", "rmsprop", rmsprop(alpha=0.3, centered=True), [], []),
        ("rmsprop_centered_momentum", "rmsprop", rmsprop(momentum=0.5, centered=True), [], []),
        ("rmsprop_maximize", "rmsprop", rmsprop(lr=1e-3, maximize=True), [], []),
        ("rmsprop_all", "rmsprop", rmsprop(lr=3e-3, alpha=0.8, eps=1e-4, weight_decay=0.1, momentum=0.7,
                                           centered=True, maximize=True), [], []),
        ("rmsprop_groups", "rmsprop", rms_mc, [], groups_wd),
        ("adadelta", "adadelta", adadelta(), [], []),
        ("adadelta_lr_rho_eps", "adadelta", adadelta(lr=0.5, rho=0.5, eps=1e-3), [], []),
        ("adadelta_weight_decay", "adadelta", adadelta(weight_decay=0.1), [], []),
        ("adadelta_maximize", "adadelta", adadelta(maximize=True), [], []),
        ("adadelta_groups", "adadelta", adadelta(rho=0.8), [], groups_wd),
        ("rprop", "rprop", rprop(), [], []),
        ("rprop_etas_step_sizes", "rprop", rprop(lr=0.02, etas=(0.3, 1.5), step_sizes=(1e-3, 0.05)), [], []),
        # lr above step_size_max: the first step already clamps.
        ("rprop_lr_clamped", "rprop", rprop(lr=0.2, step_sizes=(1e-6, 0.1)), [], []),
        ("rprop_maximize", "rprop", rprop(maximize=True), [], []),
        ("rprop_groups", "rprop", rprop(), [], [{"tensors": [1], "lr": 0.05}, {"tensors": [2], "lr": 1e-3}]),
    ]
    for p in ("keep", "reset", "pullback"):
        out.append((f"lookahead_rmsprop_momentum_{p}", "rmsprop", rms_m, [level(5, 0.5, p)], []))
    for pin, pout in (("pullback", "reset"), ("pullback", "pullback"), ("reset", "keep")):
        out.append((f"nested2_rmsprop_centered_momentum_{pin}_{pout}", "rmsprop", rms_mc,
                    [level(3, 0.5, pin), level(2, 0.8, pout)], []))
    out.append(("nested2_rmsprop_groups_pullback", "rmsprop", rms_mc,
                [level(3, 0.5, "pullback"), level(2, 0.8, "pullback")], groups_wd))
    for kind, opts in (("adagrad", adagrad(lr_decay=0.01)), ("adadelta", adadelta()), ("rprop", rprop()),
                       ("rmsprop", rmsprop())):
        out.append((f"lookahead_{kind}_keep", kind, opts, [level(5, 0.5, "keep")], []))
        out.append((f"nested2_{kind}_keep", kind, opts, [level(3, 0.5, "keep"), level(2, 0.8, "keep")], []))
    return out


def main():
    init, coef = mg.make_problem()
    data = [run_case(name, kind, opts, levels, groups, init, coef) for name, kind, opts, levels, groups in cases()]
    names = [c["name"] for c in data]
    assert len(set(names)) == len(names)
    head = (f'{{"generator": "tools/make_golden_optim2.py", "torch": "{torch.__version__}",\n'
            f' "cases": ')
    text = head + mg.dumps(data) + "}\n"
    OUT.write_text(text)
    print(f"wrote {len(data)} cases, {len(text)} bytes to {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
