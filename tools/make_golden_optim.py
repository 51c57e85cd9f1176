#!/work/venv-torch/bin/python
"""Generate tests/data/golden_optim.json: RAdam, NAdam, Adamax, Lion and Ranger trajectories for nestla's tests.

Run with PyTorch 2.x from PyPI (the committed file was made with torch 2.15.0):

    /work/venv-torch/bin/python tools/make_golden_optim.py

The output is deterministic: running the script twice gives byte-identical files.
As tools/make_golden.py (whose problem, gradients, Lookahead reference and JSON
layout this script reuses), PyTorch's CPU kernels are pinned to the portable
code path (ATEN_CPU_CAPABILITY=default: no fused multiply-adds) and one thread.

What it does
------------
- RAdam, NAdam, Adamax: torch.optim with foreach=False (the single-tensor code
  paths), float64, every option (weight_decay, decoupled_weight_decay,
  momentum_decay, maximize, betas and eps, param groups with their own lr and
  weight_decay), and the first-moment weight 1 - beta1 on both sides of 0.5
  (ATen's lerp switches formula there).
- Lion: torch.optim has none. The reference is optax's published lion
  (optax.lion = scale_by_lion, add_decayed_weights, scale_by_learning_rate),
  written out below with torch's float64 tensor operations in optax's order:
      u = sign((1 - b1) g + b1 m) + weight_decay p;  p = p + (-lr) u;  m = (1 - b2) g + b2 m
  which is the paper's Algorithm 2 (Chen et al. 2023).
- Ranger: lessw2020's Ranger (Ranger-Deep-Learning-Optimizer, version 20.4.11,
  use_gc=False), re-implemented below from its published step (not copied): its
  own moment updates (mul_/add_ rather than lerp), its step size formula, its
  weight decay (p <- p - wd lr p before the update), its integrated Lookahead
  (every k-th step of the parameter: slow += alpha (p - slow); p = slow).
  nestla::ranger() must follow it.
- Lookahead over each of the four with each momentum policy, and two nested
  (depth 2) cases: make_golden.py's independent Lookahead reference, acting on
  the first moment state['exp_avg'].

JSON schema
-----------
{
  "generator": "tools/make_golden_optim.py",
  "torch":     "2.15.0+...",          # torch.__version__ that made the file
  "cases": [ ... ]                    # as tools/make_golden.py's cases, plus:
}
A case's "optimizer" is "radam" | "nadam" | "adamax" | "lion" | "ranger";
"options" holds the reference's keyword arguments under their torch names
(lr, betas [b1, b2], eps, weight_decay, decoupled_weight_decay,
momentum_decay, maximize; Ranger adds k and alpha), every key present.
Optional "groups": [{"tensors": [i, ...], "lr": x, "weight_decay": y}, ...]
puts those tensors in torch param groups of their own (the rest stay in the
first group with the case's options); nestla gets add_param_group.

To add optimizers, write another generator in this shape (its own JSON file,
its own cases() and make_reference()), reusing make_golden's helpers.
"""

import os

os.environ["ATEN_CPU_CAPABILITY"] = "default"  # must precede `import torch`

import math  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_golden as mg  # noqa: E402  (sets the torch defaults: float64, one thread)

import torch  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "golden_optim.json"


# ---------------------------------------------------------------------------
# References without a torch.optim class


class LionReference(torch.optim.Optimizer):
    """optax.lion (= the paper's Algorithm 2) on torch tensors, in optax's order of operations."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                g = p.grad
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p)
                m = st["exp_avg"]
                u = torch.sign((1.0 - b1) * g + b1 * m)      # scale_by_lion
                u = u + wd * p                               # add_decayed_weights
                u = (-lr) * u                                # scale_by_learning_rate
                p.copy_(p + u)                               # apply_updates
                m.copy_((1.0 - b2) * g + b2 * m)             # tree_update_moment(g, mu, b2, 1)


class RangerReference(torch.optim.Optimizer):
    """lessw2020's Ranger 20.4.11 with use_gc=False: RAdam and Lookahead in one step. step() returns
    whether it synced (all parameters step together, so they sync together)."""

    def __init__(self, params, lr=1e-3, alpha=0.5, k=6, betas=(0.95, 0.999), eps=1e-5, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "alpha": alpha, "k": k, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})
        self.n_sma_threshold = 5

    @torch.no_grad()
    def step(self):
        synced = False
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                    st["slow_buffer"] = p.detach().clone()
                m, v = st["exp_avg"], st["exp_avg_sq"]
                st["step"] += 1
                t = st["step"]
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                b2t = b2 ** t
                n_sma_max = 2 / (1 - b2) - 1
                n_sma = n_sma_max - 2 * t * b2t / (1 - b2t)
                if n_sma > self.n_sma_threshold:
                    step_size = math.sqrt((1 - b2t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma
                                          * n_sma_max / (n_sma_max - 2)) / (1 - b1 ** t)
                else:
                    step_size = 1.0 / (1 - b1 ** t)
                if wd != 0:
                    p.add_(p, alpha=-wd * lr)
                if n_sma > self.n_sma_threshold:
                    p.addcdiv_(m, v.sqrt().add_(eps), value=-step_size * lr)
                else:
                    p.add_(m, alpha=-step_size * lr)
                if t % group["k"] == 0:
                    slow = st["slow_buffer"]
                    slow.add_(p - slow, alpha=group["alpha"])
                    p.copy_(slow)
                    synced = True
        return synced


# ---------------------------------------------------------------------------
# Depth 0 of a case: the reference optimizer, as make_golden.Base


def param_groups(params, options, groups):
    """torch param groups: tensors named in `groups` get their own lr / weight_decay."""
    if not groups:
        return params
    grouped = {i for g in groups for i in g["tensors"]}
    out = [{"params": [p for i, p in enumerate(params) if i not in grouped]}]
    for g in groups:
        out.append({"params": [params[i] for i in g["tensors"]],
                    **{k: g[k] for k in ("lr", "weight_decay") if k in g}})
    return out


def make_reference(kind, options, params, groups=None):
    o = dict(options)
    if "betas" in o:
        o["betas"] = tuple(o["betas"])
    ps = param_groups(params, o, groups)
    if kind == "radam":
        return torch.optim.RAdam(ps, foreach=False, **o)
    if kind == "nadam":
        return torch.optim.NAdam(ps, foreach=False, **o)
    if kind == "adamax":
        return torch.optim.Adamax(ps, foreach=False, **o)
    if kind == "lion":
        return LionReference(ps, **o)
    if kind == "ranger":
        return RangerReference(ps, **o)
    raise ValueError(kind)


class Base(mg.Base):
    """The reference at depth 0; its first moment is state['exp_avg'] for all of them."""

    def __init__(self, kind, options, params, groups=None):
        self.params = params
        self.opt = make_reference(kind, options, params, groups)
        self.buffer_key = "exp_avg"

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = g.clone()
        done = self.opt.step()
        return True if done is None else bool(done)  # Ranger: whether its built-in Lookahead synced


# ---------------------------------------------------------------------------
# Cases


def radam_opts(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
               maximize=False):
    return {"lr": lr, "betas": list(betas), "eps": eps, "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize}


def nadam_opts(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
               decoupled_weight_decay=False, maximize=False):
    return {"lr": lr, "betas": list(betas), "eps": eps, "weight_decay": weight_decay,
            "momentum_decay": momentum_decay, "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize}


def adamax_opts(lr=2e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    return {"lr": lr, "betas": list(betas), "eps": eps, "weight_decay": weight_decay, "maximize": maximize}


def lion_opts(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0):
    return {"lr": lr, "betas": list(betas), "weight_decay": weight_decay}


def ranger_opts(lr=1e-2, alpha=0.5, k=6, betas=(0.95, 0.999), eps=1e-5, weight_decay=0.0):
    return {"lr": lr, "alpha": alpha, "k": k, "betas": list(betas), "eps": eps, "weight_decay": weight_decay}


def cases():
    """(name, kind, options, lookahead levels, param groups or None)."""
    grp = [{"tensors": [1], "lr": 3e-2, "weight_decay": 0.2}]
    out = [
        ("radam", "radam", radam_opts(), [], None),
        ("radam_weight_decay", "radam", radam_opts(weight_decay=0.05), [], None),
        ("radam_decoupled_weight_decay", "radam", radam_opts(weight_decay=0.1, decoupled_weight_decay=True), [], None),
        ("radam_maximize", "radam", radam_opts(weight_decay=0.05, maximize=True), [], None),
        # rho_inf = 19: rectified from step 3; beta1 0.4: lerp weight 0.6 (ATen's other formula).
        ("radam_betas_eps", "radam", radam_opts(betas=(0.4, 0.9), eps=1e-3), [], None),
        # rho_inf = 3: never rectified.
        ("radam_unrectified", "radam", radam_opts(betas=(0.9, 0.5)), [], None),
        ("radam_groups", "radam", radam_opts(weight_decay=0.05, decoupled_weight_decay=True), [], grp),
        ("nadam", "nadam", nadam_opts(), [], None),
        ("nadam_weight_decay", "nadam", nadam_opts(weight_decay=0.05), [], None),
        ("nadam_decoupled_weight_decay", "nadam", nadam_opts(weight_decay=0.1, decoupled_weight_decay=True), [], None),
        ("nadam_momentum_decay", "nadam", nadam_opts(momentum_decay=0.05), [], None),
        ("nadam_maximize", "nadam", nadam_opts(weight_decay=0.05, maximize=True), [], None),
        ("nadam_betas_eps", "nadam", nadam_opts(betas=(0.3, 0.9), eps=1e-3), [], None),
        ("nadam_groups", "nadam", nadam_opts(weight_decay=0.05), [], grp),
        ("adamax", "adamax", adamax_opts(), [], None),
        ("adamax_weight_decay", "adamax", adamax_opts(weight_decay=0.05), [], None),
        ("adamax_maximize", "adamax", adamax_opts(weight_decay=0.05, maximize=True), [], None),
        ("adamax_betas_eps", "adamax", adamax_opts(betas=(0.3, 0.9), eps=1e-3), [], None),
        ("adamax_groups", "adamax", adamax_opts(weight_decay=0.05), [], grp),
        ("lion", "lion", lion_opts(), [], None),
        ("lion_weight_decay", "lion", lion_opts(weight_decay=0.5), [], None),
        ("lion_betas", "lion", lion_opts(betas=(0.5, 0.8), weight_decay=0.1), [], None),
        ("lion_groups", "lion", lion_opts(weight_decay=0.1), [], grp),
        ("ranger", "ranger", ranger_opts(), [], None),
        ("ranger_weight_decay", "ranger", ranger_opts(weight_decay=0.05, k=4, alpha=0.6), [], None),
    ]
    base = {"radam": radam_opts(), "nadam": nadam_opts(), "adamax": adamax_opts(), "lion": lion_opts()}
    for kind, opts in base.items():
        for policy in ("keep", "reset", "pullback"):
            out.append((f"lookahead_{kind}_{policy}", kind, opts, [mg.level(5, 0.5, policy)], None))
    for kind in ("radam", "nadam"):
        out.append((f"nested2_{kind}_pullback_reset", kind, base[kind],
                    [mg.level(3, 0.5, "pullback"), mg.level(2, 0.8, "reset")], None))
    return out


def main():
    init, coef = mg.make_problem()
    data = []
    for name, kind, opts, levels, groups in cases():
        case = mg.run_case(name, kind, opts, levels, init, coef,
                           make_base=lambda k, o, p, g=groups: Base(k, o, p, g))
        if groups:
            case["groups"] = groups
        data.append(case)
    names = [c["name"] for c in data]
    assert len(set(names)) == len(names)
    text = ('{"generator":"tools/make_golden_optim.py",\n"torch":"' + torch.__version__ + '",\n"cases":'
            + mg.dumps(data) + "}\n")
    OUT.write_text(text)
    print(f"wrote {len(data)} cases, {len(text)} bytes to {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
