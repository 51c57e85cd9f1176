#!/work/venv-torch/bin/python
"""Generate tests/data/schedule_golden.json: PyTorch's learning-rate schedules, step by step.

Run with PyTorch 2.x from PyPI (the committed file was made with 2.15.0):

    /work/venv-torch/bin/python tools/make_schedule_golden.py

The output is deterministic (no randomness; floats written with repr, which
round-trips float64 exactly), one case per line.

What it records
---------------
Each case builds torch.optim.SGD (float64 parameter, momentum 0.9; Adam for
one OneCycleLR case) and a torch.optim.lr_scheduler scheduler on it, then calls
optimizer.step(); scheduler.step() `steps` times. "lr" holds the optimizer's
lr before the first step and after every scheduler.step() (steps + 1 values):
lr[t] is what nestla's s(t) must return. Those are the values PyTorch really
uses, which for its chainable schedulers come from a recursion (lr_t from
lr_{t-1}). Where the scheduler has a closed form (_get_closed_form_lr),
"step_vs_closed_form" is the largest relative difference between the two: how
far PyTorch's recursion drifts from its own closed form by rounding; the
closed form itself is recorded ("closed_form") where nestla is held to it.

JSON schema
-----------
{
  "torch_version": str,
  "generator": "tools/make_schedule_golden.py",
  "cases": [
    {
      "name": str,
      "schedule": "StepLR" | "MultiStepLR" | "ExponentialLR" | "CosineAnnealingLR" |
                  "CosineAnnealingWarmRestarts" | "LinearLR" | "ConstantLR" |
                  "PolynomialLR" | "OneCycleLR" | "SequentialLR",
      "options": {...},          # nestla's option names (base_lr = the optimizer's lr;
                                 # anneal_strategy "cos" | "linear"); for SequentialLR:
                                 # {"schedules": [{"schedule": ..., "options": ...}, ...],
                                 #  "milestones": [int, ...]}
      "steps": int,
      "reference": "step" | "closed_form",   # which array nestla is held to (1e-12 relative)
      "lr": [float, ...],        # steps + 1 values from the step() loop
      "closed_form": [float, ...],          # with reference "closed_form" only
      "step_vs_closed_form": float,         # optional, see above
      "momentum": [float, ...]   # OneCycleLR only: SGD's momentum (or Adam's beta1)
    }, ...
  ]
}
"""

import json
import math
import pathlib
import warnings

import torch
from torch.optim import lr_scheduler as S

warnings.filterwarnings("ignore")  # get_lr / epoch deprecation chatter
torch.set_default_dtype(torch.float64)

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "schedule_golden.json"


def make_optimizer(lr, adam=False):
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    if adam:
        return torch.optim.Adam([p], lr=lr, betas=(0.9, 0.999))
    return torch.optim.SGD([p], lr=lr, momentum=0.9)


def torch_kwargs(name, o):
    """nestla's options (minus base_lr) as the torch scheduler's keyword arguments."""
    kw = {k: v for k, v in o.items() if k != "base_lr"}
    return kw


def build(opt, name, options):
    if name == "SequentialLR":
        subs = [build(opt, s["schedule"], s["options"]) for s in options["schedules"]]
        return S.SequentialLR(opt, subs, milestones=options["milestones"])
    return getattr(S, name)(opt, **torch_kwargs(name, options))


def momentum_of(opt):
    g = opt.param_groups[0]
    return g["betas"][0] if "betas" in g else g["momentum"]


def run_case(name, schedule, options, steps, reference="step", adam=False):
    if schedule == "OneCycleLR":
        base_lr = 1.0  # OneCycleLR sets the lr itself
    elif schedule == "SequentialLR":
        base_lr = options["schedules"][0]["options"]["base_lr"]
        assert all(s["options"]["base_lr"] == base_lr for s in options["schedules"]), "one optimizer, one base lr"
    else:
        base_lr = options["base_lr"]
    opt = make_optimizer(base_lr, adam)
    sched = build(opt, schedule, options)
    lr = [opt.param_groups[0]["lr"]]
    mom = [momentum_of(opt)]
    for _ in range(steps):
        opt.step()
        sched.step()
        lr.append(opt.param_groups[0]["lr"])
        mom.append(momentum_of(opt))
    case = {"name": name, "schedule": schedule, "options": options, "steps": steps, "reference": reference, "lr": lr}
    if hasattr(sched, "_get_closed_form_lr"):
        closed = []
        for t in range(steps + 1):
            sched.last_epoch = t
            closed.append(float(sched._get_closed_form_lr()[0]))
        case["step_vs_closed_form"] = max(
            (abs(a - b) / abs(a) if a != 0 else abs(b)) for a, b in zip(lr, closed))
        if reference == "closed_form":
            case["closed_form"] = closed
    if schedule == "OneCycleLR":
        case["momentum"] = mom
    return case


def main():
    cases = [
        run_case("step", "StepLR", {"base_lr": 0.1, "step_size": 3, "gamma": 0.5}, 30),
        run_case("step_default_gamma", "StepLR", {"base_lr": 0.05, "step_size": 7}, 40),
        run_case("multistep", "MultiStepLR", {"base_lr": 0.1, "milestones": [2, 5, 9], "gamma": 0.3}, 15),
        run_case("multistep_repeated", "MultiStepLR", {"base_lr": 0.2, "milestones": [0, 4, 4, 10], "gamma": 0.5}, 14),
        run_case("exponential", "ExponentialLR", {"base_lr": 0.1, "gamma": 0.95}, 200),
        run_case("exponential_long", "ExponentialLR", {"base_lr": 0.3, "gamma": 0.995}, 1000),
        run_case("cosine", "CosineAnnealingLR", {"base_lr": 0.1, "T_max": 10, "eta_min": 0.001}, 50),
        run_case("cosine_zero_min", "CosineAnnealingLR", {"base_lr": 0.1, "T_max": 100}, 250),
        run_case("cosine_long", "CosineAnnealingLR", {"base_lr": 0.1, "T_max": 5000, "eta_min": 0.01}, 5000),
        # Past T_max PyTorch's recursion drifts from its closed form by more than
        # 1e-12 (see step_vs_closed_form): nestla is held to the closed form here.
        run_case("cosine_past_t_max", "CosineAnnealingLR", {"base_lr": 0.1, "T_max": 1000, "eta_min": 0.01}, 3000,
                 reference="closed_form"),
        run_case("cosine_alpha_up", "CosineAnnealingLR", {"base_lr": 0.5, "T_max": 20, "eta_min": 0.9}, 20),
        run_case("warm_restarts", "CosineAnnealingWarmRestarts", {"base_lr": 0.1, "T_0": 5}, 30),
        run_case("warm_restarts_mult", "CosineAnnealingWarmRestarts",
                 {"base_lr": 0.1, "T_0": 3, "T_mult": 2, "eta_min": 0.01}, 100),
        run_case("warm_restarts_mult3", "CosineAnnealingWarmRestarts",
                 {"base_lr": 0.02, "T_0": 1, "T_mult": 3, "eta_min": 0.001}, 130),
        run_case("linear_warmup", "LinearLR", {"base_lr": 0.1, "start_factor": 0.25, "end_factor": 1.0, "total_iters": 4}, 12),
        run_case("linear_default", "LinearLR", {"base_lr": 0.1}, 10),
        run_case("linear_decay", "LinearLR", {"base_lr": 0.1, "start_factor": 1.0, "end_factor": 0.0, "total_iters": 10}, 15),
        run_case("linear_long", "LinearLR", {"base_lr": 0.1, "start_factor": 0.001, "end_factor": 1.0, "total_iters": 1000}, 1010),
        run_case("constant", "ConstantLR", {"base_lr": 0.1, "factor": 0.5, "total_iters": 3}, 8),
        run_case("constant_default", "ConstantLR", {"base_lr": 0.1}, 8),
        run_case("polynomial", "PolynomialLR", {"base_lr": 0.1, "total_iters": 8, "power": 1.0}, 12),
        run_case("polynomial_power", "PolynomialLR", {"base_lr": 0.1, "total_iters": 50, "power": 2.5}, 60),
        run_case("polynomial_sqrt", "PolynomialLR", {"base_lr": 0.3, "total_iters": 1000, "power": 0.5}, 1003),
        run_case("onecycle_cos", "OneCycleLR", {"max_lr": 0.1, "total_steps": 100}, 100),
        run_case("onecycle_linear", "OneCycleLR",
                 {"max_lr": 0.5, "total_steps": 60, "pct_start": 0.25, "anneal_strategy": "linear",
                  "base_momentum": 0.8, "max_momentum": 0.9, "div_factor": 10.0, "final_div_factor": 100.0}, 60),
        run_case("onecycle_three_phase_cos", "OneCycleLR",
                 {"max_lr": 0.1, "total_steps": 100, "three_phase": True}, 100),
        run_case("onecycle_three_phase_linear", "OneCycleLR",
                 {"max_lr": 0.2, "total_steps": 37, "pct_start": 0.4, "anneal_strategy": "linear", "three_phase": True}, 37),
        run_case("onecycle_adam_beta1", "OneCycleLR", {"max_lr": 0.01, "total_steps": 50, "pct_start": 0.1}, 50, adam=True),
        run_case("onecycle_short_warmup", "OneCycleLR", {"max_lr": 0.1, "total_steps": 10, "pct_start": 0.05}, 10),
        run_case("sequential_warmup_cosine", "SequentialLR", {
            "schedules": [
                {"schedule": "LinearLR", "options": {"base_lr": 0.1, "start_factor": 0.1, "total_iters": 5}},
                {"schedule": "CosineAnnealingLR", "options": {"base_lr": 0.1, "T_max": 20, "eta_min": 0.001}},
            ],
            "milestones": [5]}, 30),
        run_case("sequential_three", "SequentialLR", {
            "schedules": [
                {"schedule": "ConstantLR", "options": {"base_lr": 0.1, "factor": 0.5, "total_iters": 2}},
                {"schedule": "ExponentialLR", "options": {"base_lr": 0.1, "gamma": 0.9}},
                {"schedule": "StepLR", "options": {"base_lr": 0.1, "step_size": 2, "gamma": 0.5}},
            ],
            "milestones": [3, 10]}, 20),
        run_case("sequential_restarts_poly", "SequentialLR", {
            "schedules": [
                {"schedule": "CosineAnnealingWarmRestarts", "options": {"base_lr": 0.1, "T_0": 4, "T_mult": 2}},
                {"schedule": "PolynomialLR", "options": {"base_lr": 0.1, "total_iters": 6, "power": 2.0}},
            ],
            "milestones": [12]}, 25),
    ]
    for c in cases:
        if c["reference"] == "step" and "step_vs_closed_form" in c:
            assert c["step_vs_closed_form"] < 1e-13, (c["name"], c["step_vs_closed_form"])
    cosine = next(c for c in cases if c["name"] == "cosine_past_t_max")
    assert cosine["step_vs_closed_form"] > 1e-12, cosine["step_vs_closed_form"]
    data = {"torch_version": torch.__version__, "generator": "tools/make_schedule_golden.py", "cases": cases}
    # One case per line: readable diffs without a line per number.
    head = json.dumps({k: v for k, v in data.items() if k != "cases"})[:-1]
    OUT.write_text(head + ', "cases": [\n' + ",\n".join(json.dumps(c) for c in cases) + "\n]}\n")
    json.loads(OUT.read_text())
    print(f"wrote {OUT} ({len(cases)} cases, torch {torch.__version__})")
    for c in cases:
        if "step_vs_closed_form" in c:
            print(f"  {c['name']}: step() vs closed form {c['step_vs_closed_form']:.3g}")


if __name__ == "__main__":
    main()
