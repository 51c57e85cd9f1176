#!/usr/bin/python3
"""Generate tests/data/golden.json: reference trajectories for nestla's tests.

Run from anywhere with Debian's Python and PyTorch (1.13, CPU):

    /usr/bin/python3 tools/make_golden.py

The output is deterministic: running the script twice gives byte-identical files.
To make it independent of the machine, PyTorch's CPU kernels are pinned to the
portable code path (ATEN_CPU_CAPABILITY=default, so no fused multiply-adds) and
to one thread.

What it does
------------
Base optimizers are torch.optim.SGD / Adam / AdamW with foreach=False, in
float64. Lookahead and nested Lookahead are an independent Python reference,
written straight from the semantics contract (docs/semantics.md): it
wraps the torch.optim base optimizer and manipulates param.data and the base
optimizer's first-moment buffers (SGD's state['momentum_buffer'], Adam's and
AdamW's state['exp_avg']). A level with outer momentum (DiLoCo's outer step)
is torch.optim.SGD(lr=alpha, momentum, nesterov) on the slow weights with the
pseudo-gradient phi - theta as their gradient, as DiLoCo's reference code does.

The parameter set is 3 tensors (7, 3x4 and 1 elements). The loss is the
nonconvex, elementwise  sum(a * p^2 / 2 + b * sin(c * p))  with fixed random
a, b, c per element; its gradient is taken by autograd at the current
parameters before every step. That gradient is recorded, so the C++ test feeds
exactly the same gradients and the comparison tests the optimizer alone.

JSON schema (floats are written with repr, which round-trips float64 exactly)
------------------------------------------------------------------------------
[                                   # list of cases
  {
    "name":      str,               # unique, e.g. "nested2_adam_pullback_reset"
    "optimizer": "sgd" | "adam" | "adamw",
    "options":   {...},             # PyTorch names: lr, momentum, dampening,
                                    # weight_decay, nesterov (sgd);
                                    # lr, betas [b1, b2], eps, weight_decay,
                                    # amsgrad (adam, adamw). All keys present.
    "lookahead": [                  # levels, innermost first; [] = base optimizer
      {"k": int, "alpha": float, "momentum": "keep" | "reset" | "pullback",
       "outer_momentum": float, "outer_nesterov": bool}, ...   # the last two only
    ],                                                          # when outer momentum is on
    "shapes":    [7, 12, 1],        # element counts of the 3 tensors (flattened)
    "init":      [[...], [...], [...]],   # initial parameters, flat
    "steps": [                      # one entry per step, in order
      {
        "grad":   [[...], [...], [...]],  # gradient fed at this step
        "params": [[...], [...], [...]],  # parameters after the step
        "cycle":  bool,             # the top level completed a cycle (its step()
                                    # return value); always true for a base optimizer
        "syncs":  [bool, ...]       # per Lookahead level (innermost first): did it
                                    # sync at this step; [] for a base optimizer
      }, ...
    ]
  }, ...
]
"""

import os

os.environ["ATEN_CPU_CAPABILITY"] = "default"  # must precede `import torch`

import json  # noqa: E402
import pathlib  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)

SEED = 20240611
SHAPES = [(7,), (3, 4), (1,)]
STEPS = 60

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "golden.json"


# ---------------------------------------------------------------------------
# Problem: initial parameters and the nonconvex loss


def make_problem():
    gen = torch.Generator().manual_seed(SEED)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    coef = []
    for s in SHAPES:
        a = 0.5 + torch.rand(s, generator=gen)          # curvature of the quadratic, [0.5, 1.5)
        b = 0.2 + 0.8 * torch.rand(s, generator=gen)    # amplitude of the ripple,   [0.2, 1.0)
        c = 0.5 + 2.0 * torch.rand(s, generator=gen)    # frequency of the ripple,   [0.5, 2.5)
        coef.append((a, b, c))
    return init, coef


def loss_grads(params, coef):
    """Autograd gradient of sum(a p^2/2 + b sin(c p)) at the current params."""
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    loss = sum((a * q * q / 2 + b * torch.sin(c * q)).sum() for q, (a, b, c) in zip(leaves, coef))
    grads = torch.autograd.grad(loss, leaves)
    return [g.detach().clone() for g in grads]


# ---------------------------------------------------------------------------
# Base optimizer (torch.optim) and the Lookahead reference


def make_torch_opt(kind, options, params):
    if kind == "sgd":
        return torch.optim.SGD(params, foreach=False, **options)
    o = dict(options)
    o["betas"] = tuple(o["betas"])
    if kind == "adam":
        return torch.optim.Adam(params, foreach=False, **o)
    if kind == "adamw":
        return torch.optim.AdamW(params, foreach=False, **o)
    raise ValueError(kind)


class Base:
    """Depth 0: the torch.optim optimizer. One step is one cycle."""

    def __init__(self, kind, options, params):
        self.params = params
        self.opt = make_torch_opt(kind, options, params)
        self.buffer_key = "momentum_buffer" if kind == "sgd" else "exp_avg"

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = g.clone()
        self.opt.step()
        return True

    def first_moments(self):
        """The first-moment buffers, created as zeros if the state has none yet
        (semantics: a missing buffer is zero)."""
        out = []
        for p in self.params:
            st = self.opt.state[p]
            if st.get(self.buffer_key) is None:
                st[self.buffer_key] = torch.zeros_like(p)
            out.append(st[self.buffer_key])
        return out

    def lookaheads(self):
        return []  # no Lookahead levels inside a base optimizer


class Lookahead:
    def __init__(self, inner, k, alpha, policy, outer_momentum=0.0, outer_nesterov=False):
        assert k >= 1 and 0.0 <= alpha <= 1.0 and policy in ("keep", "reset", "pullback")
        self.inner, self.k, self.alpha, self.policy = inner, k, alpha, policy
        self.outer_momentum, self.outer_nesterov = outer_momentum, outer_nesterov
        self.params = inner.params
        self.base = inner if isinstance(inner, Base) else inner.base
        self.phi = None      # slow weights, copied from theta on the first step
        self.m_slow = None   # slow first moments (pullback), zero at first
        self.outer = None    # the outer SGD on phi (outer momentum only)
        self.cycles = 0      # cycles the inner optimizer has completed
        self.synced = False  # did this level sync on the latest step

    def lookaheads(self):
        """Every Lookahead level inside this one, outermost first."""
        return [self.inner] + self.inner.lookaheads() if isinstance(self.inner, Lookahead) else []

    def init_slow(self):
        """First step, before any update: phi <- theta, zero slow moments."""
        self.phi = [p.detach().clone() for p in self.params]
        self.m_slow = [torch.zeros_like(p) for p in self.params]
        if self.outer_momentum != 0:
            self.outer = torch.optim.SGD(self.phi, lr=self.alpha, momentum=self.outer_momentum,
                                         nesterov=self.outer_nesterov, foreach=False)

    def step(self, grads):
        if self.phi is None:  # first step: before any update (inner levels init below, still before it)
            self.init_slow()
        self.synced = False
        if not self.inner.step(grads):  # inner syncs (if any) happen inside, before ours
            return False
        self.cycles += 1
        if self.cycles % self.k != 0:
            return False
        self.sync()
        self.synced = True
        return True

    def sync(self, x=None, m_mean=None):
        """The level's sync. x: theta - phi per tensor, None for this worker's own;
        the distributed simulation (make_distributed_golden.py) passes the group
        mean of theta - phi, and of the first moments (m_mean) for pullback."""
        a = self.alpha
        with torch.no_grad():
            if self.outer is None:
                for phi, p, xi in zip(self.phi, self.params, x or [None] * len(self.phi)):
                    if xi is None:
                        phi.copy_(phi + a * (p.data - phi))   # phi <- phi + alpha (theta - phi)
                    else:
                        phi.copy_(phi + a * xi)
            else:                                     # outer SGD on phi, gradient phi - theta
                for phi, p, xi in zip(self.phi, self.params, x or [None] * len(self.phi)):
                    phi.grad = phi - p.data if xi is None else -xi
                self.outer.step()
            for phi, p in zip(self.phi, self.params):
                p.data.copy_(phi)                     # theta <- phi
            for lvl in self.lookaheads():            # inner levels' slow weights <- phi
                for dst, src in zip(lvl.phi, self.phi):
                    dst.copy_(src)
            if self.policy == "keep":
                return
            ms = self.base.first_moments()
            if self.policy == "reset":
                for m in ms:
                    m.zero_()
            else:  # pullback
                for m, m_s, mm in zip(ms, self.m_slow, m_mean or ms):
                    m_s.copy_(m_s + a * (mm - m_s))   # m_s <- m_s + alpha (m - m_s)
                    m.copy_(m_s)                       # m <- m_s
            for lvl in self.lookaheads():            # inner pullback levels restart from the new m
                if lvl.policy == "pullback":
                    for dst, m in zip(lvl.m_slow, ms):
                        dst.copy_(m)


def build(kind, options, levels, params, make_base=None):
    """make_base(kind, options, params): the depth-0 optimizer, a Base (default: Base itself)."""
    opt = (make_base or Base)(kind, options, params)
    for lv in levels:  # innermost first
        opt = Lookahead(opt, lv["k"], lv["alpha"], lv["momentum"],
                        lv.get("outer_momentum", 0.0), lv.get("outer_nesterov", False))
    return opt


def all_levels(opt):
    """Lookahead levels of opt, innermost first."""
    if isinstance(opt, Base):
        return []
    return list(reversed([opt] + opt.lookaheads()))


# ---------------------------------------------------------------------------
# Cases


def flat(ts):
    return [t.detach().reshape(-1).tolist() for t in ts]


def run_case(name, kind, options, levels, init, coef, steps=STEPS, make_base=None):
    params = [t.clone().requires_grad_(True) for t in init]
    opt = build(kind, options, levels, params, make_base)
    lvls = all_levels(opt)
    record = []
    for _ in range(steps):
        grads = loss_grads(params, coef)
        cycle = opt.step(grads)
        record.append({
            "grad": flat(grads),
            "params": flat(params),
            "cycle": bool(cycle),
            "syncs": [bool(l.synced) for l in lvls],
        })
    return {
        "name": name,
        "optimizer": kind,
        "options": options,
        "lookahead": levels,
        "shapes": [t.numel() for t in init],
        "init": flat(init),
        "steps": record,
    }


def sgd_opts(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    return {"lr": lr, "momentum": momentum, "dampening": dampening,
            "weight_decay": weight_decay, "nesterov": nesterov}


def adam_opts(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
    return {"lr": lr, "betas": list(betas), "eps": eps,
            "weight_decay": weight_decay, "amsgrad": amsgrad}


def level(k, alpha, momentum="keep", outer_momentum=0.0, outer_nesterov=False):
    out = {"k": k, "alpha": alpha, "momentum": momentum}
    if outer_momentum != 0:
        out["outer_momentum"] = outer_momentum
        out["outer_nesterov"] = outer_nesterov
    return out


def cases():
    policies = ["keep", "reset", "pullback"]
    sgd_m = sgd_opts(0.05, momentum=0.9)
    adam = adam_opts(1e-2)
    out = [
        ("sgd_plain", "sgd", sgd_opts(0.1), []),
        ("sgd_momentum", "sgd", sgd_opts(0.05, momentum=0.9), []),
        ("sgd_momentum_dampening", "sgd", sgd_opts(0.05, momentum=0.9, dampening=0.3), []),
        ("sgd_nesterov", "sgd", sgd_opts(0.05, momentum=0.9, nesterov=True), []),
        ("sgd_momentum_weight_decay", "sgd", sgd_opts(0.05, momentum=0.9, weight_decay=0.01), []),
        ("adam", "adam", adam_opts(1e-2), []),
        ("adam_weight_decay", "adam", adam_opts(1e-2, weight_decay=0.05), []),
        ("adam_amsgrad", "adam", adam_opts(1e-2, amsgrad=True), []),
        ("adam_amsgrad_weight_decay", "adam", adam_opts(1e-2, weight_decay=0.05, amsgrad=True), []),
        ("adamw", "adamw", adam_opts(1e-2, weight_decay=0.1), []),
        ("adamw_amsgrad", "adamw", adam_opts(1e-2, weight_decay=0.1, amsgrad=True), []),
    ]
    for p in policies:
        out.append((f"lookahead_adam_{p}", "adam", adam, [level(5, 0.5, p)]))
    for p in policies:
        out.append((f"lookahead_sgd_momentum_{p}", "sgd", sgd_m, [level(5, 0.5, p)]))
    for base_name, kind, opts in (("adam", "adam", adam), ("sgd_momentum", "sgd", sgd_m)):
        for pin in policies:
            for pout in policies:
                out.append((f"nested2_{base_name}_{pin}_{pout}", kind, opts,
                            [level(3, 0.5, pin), level(2, 0.8, pout)]))
    for pols in (("pullback", "reset", "pullback"), ("pullback", "pullback", "pullback")):
        out.append((f"nested3_adam_{'_'.join(pols)}", "adam", adam,
                    [level(2, 0.5, pols[0]), level(3, 0.6, pols[1]), level(2, 0.8, pols[2])]))
    # Outer momentum (DiLoCo's outer step), heavy ball and Nesterov, depth 1 and nested.
    adamw = adam_opts(1e-2, weight_decay=0.1)
    out += [
        ("outer_heavyball_adam", "adam", adam, [level(5, 0.5, outer_momentum=0.9)]),
        ("outer_nesterov_adamw_diloco", "adamw", adamw, [level(5, 0.7, outer_momentum=0.9, outer_nesterov=True)]),
        ("outer_nesterov_sgd_momentum_pullback", "sgd", sgd_m,
         [level(4, 0.8, "pullback", outer_momentum=0.5, outer_nesterov=True)]),
        ("nested2_outer_inner_heavyball_adam", "adam", adam,
         [level(3, 0.5, "pullback", outer_momentum=0.7), level(2, 0.8, "keep")]),
        ("nested2_outer_outer_nesterov_adam", "adam", adam,
         [level(3, 0.5, "keep"), level(2, 0.8, "reset", outer_momentum=0.9, outer_nesterov=True)]),
        ("nested2_outer_both_sgd_momentum", "sgd", sgd_m,
         [level(3, 0.5, "reset", outer_momentum=0.6, outer_nesterov=True),
          level(2, 0.9, "pullback", outer_momentum=0.8)]),
        ("nested3_outer_mixed_adamw", "adamw", adamw,
         [level(2, 0.5, "pullback", outer_momentum=0.9, outer_nesterov=True), level(3, 0.6, "keep"),
          level(2, 1.0, "pullback", outer_momentum=0.5)]),
    ]
    return out


def dumps(data):
    """Compact JSON with one step per line, so that diffs of the file stay readable."""
    def j(x):
        return json.dumps(x, separators=(",", ":"))
    out = []
    for c in data:
        head = ",\n".join(f" {j(k)}:{j(v)}" for k, v in c.items() if k != "steps")
        steps = ",\n".join("  " + j(st) for st in c["steps"])
        out.append("{\n" + head + ",\n \"steps\":[\n" + steps + "\n ]}")
    text = "[\n" + ",\n".join(out) + "\n]\n"
    assert json.loads(text) == data
    return text


def main():
    init, coef = make_problem()
    data = [run_case(name, kind, opts, levels, init, coef) for name, kind, opts, levels in cases()]
    names = [c["name"] for c in data]
    assert len(set(names)) == len(names)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(data)
    OUT.write_text(text)
    print(f"wrote {len(data)} cases, {len(text)} bytes to {OUT}")


if __name__ == "__main__":
    main()
