#!/usr/bin/python3
"""Runs the seed paper's two experiments with resnet18_train and writes a markdown table and accuracy plots.

Experiment 1 compares SGD (momentum 0.9), Adam, Lookahead + SGD/Adam and Nested Lookahead +
SGD/Adam, the Lookahead variants with each momentum policy (keep, reset, pullback), over
--seeds seeds. Experiment 2 is the grid over k, s, alpha and h of Nested Lookahead.

Every run writes its own metrics (JSON lines) and log under --out/runs/; a run whose
metrics already end in a summary is not run again (use --force), so an interrupted
experiment continues where it stopped, and --summarize-only rebuilds the report.

The defaults are a CPU-sized version: width 8, 3 epochs of all of Fashion-MNIST, 2 seeds,
one single-threaded run per core. On a 2-core machine a run takes about 3.7 minutes, so
experiment 1 (28 runs) takes about 50 minutes and experiment 2 (32 runs) about an hour.
The paper's scale (width 64, many epochs) is a GPU job, e.g.
    experiments.py --width 64 --epochs 50 --seeds 3 --trainer-args="--device cuda" --jobs 1
Python 3 standard library only, plus matplotlib for the plots (skipped without it).
"""

import argparse
import concurrent.futures
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

POLICIES = ("keep", "reset", "pullback")


def experiment1(a):
    """(name, label, trainer args) for every configuration of experiment 1."""
    configs = [
        ("sgd", "SGD (momentum 0.9)", ["--optimizer", "sgd", "--momentum", "0.9", "--lr", str(a.lr_sgd)]),
        ("adam", "Adam", ["--optimizer", "adam", "--lr", str(a.lr_adam)]),
    ]
    for kind, title, levels in (
        ("lookahead", f"Lookahead({a.k}, {a.alpha})", ["--k", str(a.k), "--alpha", str(a.alpha)]),
        ("nested", f"Nested Lookahead({a.k}, {a.alpha}; {a.s}, {a.h})",
         ["--k", str(a.k), "--alpha", str(a.alpha), "--s", str(a.s), "--h", str(a.h)]),
    ):
        for inner in ("sgd", "adam"):
            lr = a.lr_sgd if inner == "sgd" else a.lr_adam
            base = "SGD" if inner == "sgd" else "Adam"
            for policy in POLICIES:
                args = ["--optimizer", kind, "--inner", inner, "--lr", str(lr), *levels,
                        "--pullback", "none" if policy == "keep" else policy]
                configs.append((f"{kind}-{inner}-{policy}", f"{title} + {base}, {policy}", args))
    return configs


def experiment2(a):
    """The k, s, alpha, h grid of Nested Lookahead over --grid-inner."""
    lr = a.lr_sgd if a.grid_inner == "sgd" else a.lr_adam
    configs = []
    for k in a.grid_k:
        for alpha in a.grid_alpha:
            for s in a.grid_s:
                for h in a.grid_h:
                    name = f"grid-{a.grid_inner}-k{k}-a{alpha:g}-s{s}-h{h:g}"
                    label = f"k={k}, alpha={alpha:g}, s={s}, h={h:g}"
                    args = ["--optimizer", "nested", "--inner", a.grid_inner, "--lr", str(lr), "--k", str(k),
                            "--alpha", str(alpha), "--s", str(s), "--h", str(h)]
                    configs.append((name, label, args))
    return configs


def common_args(a):
    """Arguments every run shares: the scale of the experiment."""
    args = ["--dataset", a.dataset, "--width", str(a.width), "--epochs", str(a.epochs),
            "--batch-size", str(a.batch_size), "--threads", str(a.threads), "--progress", "plain"]
    if a.data:
        args += ["--data", a.data]
    if a.train_subset:
        args += ["--train-subset", str(a.train_subset)]
    if a.test_subset:
        args += ["--test-subset", str(a.test_subset)]
    if a.image_size:
        args += ["--image-size", str(a.image_size)]
    if a.no_augment:
        args.append("--no-augment")
    if a.schedule != "none":
        args += ["--schedule", a.schedule]
    args += shlex.split(a.trainer_args)
    return args


def read_metrics(path):
    """(epoch records, summary or None) of one run's metrics file."""
    epochs, summary = {}, None
    try:
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if "epoch" in rec:
                    epochs[rec["epoch"]] = rec  # a resumed run may repeat an epoch: the last one counts
                elif "summary" in rec:
                    summary = rec["summary"]
    except FileNotFoundError:
        pass
    return [epochs[e] for e in sorted(epochs)], summary


def mean_std(values):
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def fmt_pct(values):
    m, s = mean_std(values)
    if math.isnan(m):
        return "—"
    return f"{100 * m:.2f} ± {100 * s:.2f}" if len(values) > 1 else f"{100 * m:.2f}"


def fmt_time(seconds):
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Run:
    def __init__(self, experiment, name, label, args, seed, out, trainer, common):
        self.experiment, self.name, self.label, self.seed = experiment, name, label, seed
        d = out / "runs" / name
        self.metrics = d / f"seed{seed}.jsonl"
        self.log = d / f"seed{seed}.log"
        self.checkpoint = d / f"seed{seed}.ckpt"
        self.command = [str(trainer), *common, *args, "--seed", str(seed), "--metrics", str(self.metrics)]

    def done(self):
        return read_metrics(self.metrics)[1] is not None


def execute(run, use_checkpoints):
    run.metrics.parent.mkdir(parents=True, exist_ok=True)
    cmd = list(run.command)
    if use_checkpoints:
        cmd += ["--checkpoint", str(run.checkpoint)]
        if run.checkpoint.exists() and run.metrics.exists():
            cmd += ["--resume", str(run.checkpoint)]
    start = time.monotonic()
    with open(run.log, "a") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    return rc, time.monotonic() - start


def summarize(experiment_configs, runs, out, a):
    """Writes results.md and one PNG per experiment; returns the markdown."""
    lines = ["# ResNet-18 experiments with nestla", "",
             f"Scale: {a.dataset}, width {a.width}, {a.epochs} epochs, batch {a.batch_size}, "
             f"train subset {a.train_subset or 'all'}, test subset {a.test_subset or 'all'}"
             + (f", image size {a.image_size}" if a.image_size else "")
             + f", lr SGD {a.lr_sgd} / Adam {a.lr_adam}, schedule {a.schedule}, seeds {a.seeds}.", "",
             "Accuracies in %: mean ± sample standard deviation over seeds; final = last epoch, best = best epoch. "
             "Steps = optimizer steps of one run.", ""]
    plots = {}
    for exp, configs in experiment_configs:
        title = {1: "Experiment 1: optimizers and momentum policies",
                 2: f"Experiment 2: Nested Lookahead grid over k, alpha, s, h ({a.grid_inner})"}[exp]
        lines += [f"## {title}", "",
                  "| configuration | runs | final test acc | best test acc | steps | time/run |",
                  "|---|---|---|---|---|---|"]
        curves = []
        for name, label, _ in configs:
            finals, bests, steps, minutes, per_seed = [], [], [], [], []
            for r in runs:
                if r.experiment != exp or r.name != name:
                    continue
                epochs, summary = read_metrics(r.metrics)
                accs = [e.get("test_acc") for e in epochs if e.get("test_acc") is not None]
                if not accs:
                    continue
                per_seed.append(accs)
                finals.append(accs[-1])
                bests.append(max(accs))
                steps.append(epochs[-1]["step"])
                if summary and summary.get("seconds") is not None:
                    minutes.append(summary["seconds"] / 60)
            step_text = "—" if not steps else (str(steps[0]) if len(set(steps)) == 1 else f"{min(steps)}–{max(steps)}")
            minute_text = "—" if not minutes else fmt_time(60 * sum(minutes) / len(minutes))
            lines.append(f"| {label} | {len(finals)} | {fmt_pct(finals)} | {fmt_pct(bests)} | {step_text} | {minute_text} |")
            if per_seed:
                n = min(len(c) for c in per_seed)
                mean = [sum(c[i] for c in per_seed) / len(per_seed) for i in range(n)]
                std = [mean_std([c[i] for c in per_seed])[1] for i in range(n)]
                curves.append((name, label, mean, std))
        lines.append("")
        if curves:
            png = out / f"experiment{exp}.png"
            if plot(curves, title, png):
                plots[exp] = png
                lines += [f"![{title}]({png.name})", ""]
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


def run_header(path):
    """The run record (first line) of a metrics file, or {}."""
    try:
        with open(path) as f:
            return json.loads(f.readline()).get("run", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def report_runs(paths, out, title):
    """--report: an epoch-by-epoch table and a test-accuracy plot of finished (or running) trainer runs."""
    lines = [f"# {title}", ""]
    curves = []
    for path in map(Path, paths):
        epochs, summary = read_metrics(path)
        if not epochs:
            raise SystemExit(f"experiments: {path}: no epoch records (is it a resnet18_train --metrics file?)")
        run = run_header(path)
        data = run.get("data", {})
        lines += [f"## {path.stem}", "",
                  f"{run.get('backend', '?')}; batch {run.get('batch_size', '?')}, {run.get('epochs', '?')} epochs, "
                  f"schedule {run.get('schedule', {}).get('kind', '?')}, seed {run.get('seed', '?')}, "
                  f"{data.get('dataset', '?')} ({data.get('train_size', '?')} train / {data.get('test_size', '?')} test, "
                  f"augmentation {'on' if data.get('augment') else 'off'}).", ""]
        if summary:
            lines += [f"**Final test accuracy {100 * summary['final_test_acc']:.2f}%**, best "
                      f"{100 * summary['best_test_acc']:.2f}% (epoch {summary['best_epoch']}), {summary['steps']} steps, "
                      f"{fmt_time(summary['seconds'])}." + (" Stopped early." if summary.get("stopped_early") else ""), ""]
        else:
            lines += [f"Unfinished: {len(epochs)} epochs recorded.", ""]
        lines += ["| epoch | steps | lr | train loss | train acc | test loss | test acc | time | images/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in epochs:
            lines.append(f"| {e['epoch']} | {e['step']} | {e['lr']:.3g} | {e['train_loss']:.4f} | "
                         f"{100 * e['train_acc']:.2f} | {e['test_loss']:.4f} | {100 * e['test_acc']:.2f} | "
                         f"{fmt_time(e['seconds'])} | {e['images_per_s']:.0f} |")
        lines.append("")
        curves.append((path.stem, path.stem, [e["test_acc"] for e in epochs], [0.0] * len(epochs)))
    out.mkdir(parents=True, exist_ok=True)
    png = out / "report.png"
    if plot(curves, title, png):
        lines += [f"![{title}]({png.name})", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def plot(curves, title, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("experiments: matplotlib not found, no plot (Debian: apt install python3-matplotlib)", file=sys.stderr)
        return False
    # One colour per optimizer family, one line style per momentum policy, so that the
    # policies of a family read as a group; bands (± std over seeds) only where few curves.
    families = []
    for name, *_ in curves:
        fam = re.sub(r"-(keep|reset|pullback)$", "", name)
        if fam not in families:
            families.append(fam)
    styles = {"keep": "-", "reset": "--", "pullback": ":"}
    cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(11, 6))
    for name, label, mean, std in curves:
        policy = re.search(r"-(keep|reset|pullback)$", name)
        color = cmap(families.index(re.sub(r"-(keep|reset|pullback)$", "", name)) % cmap.N)
        x = list(range(1, len(mean) + 1))
        ax.plot(x, [100 * v for v in mean], marker="o" if len(x) < 30 else None, markersize=3, label=label,
                color=color, linestyle=styles[policy.group(1)] if policy else "-")
        if len(curves) <= 6 and any(v > 0 for v in std):
            ax.fill_between(x, [100 * (m - v) for m, v in zip(mean, std)], [100 * (m + v) for m, v in zip(mean, std)],
                            color=color, alpha=0.15)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parse_args(argv):
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trainer", default=str(here.parents[1] / "build" / "examples" / "resnet18" / "resnet18_train"),
                   help="the resnet18_train executable")
    p.add_argument("--out", default=str(here.parents[1] / "out" / "experiments"), help="directory for runs and report")
    p.add_argument("--experiment", choices=["1", "2", "all"], default="1", help="which experiment")
    p.add_argument("--seeds", type=int, default=2, help="seeds per configuration (0..N-1)")
    p.add_argument("--only", default="", help="run only configurations whose name matches this regex")
    g = p.add_argument_group("scale")
    g.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist", "cifar10", "synthetic"])
    g.add_argument("--data", default="", help="dataset directory (the trainer's default when empty)")
    g.add_argument("--width", type=int, default=8, help="ResNet-18 width (64 = the paper's network)")
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--train-subset", type=int, default=0, help="first N training images (0: all)")
    g.add_argument("--test-subset", type=int, default=0, help="first N test images (0: all)")
    g.add_argument("--image-size", type=int, default=0, help="synthetic data only: image size (0: trainer default)")
    g.add_argument("--no-augment", action="store_true")
    g.add_argument("--schedule", default="none", choices=["none", "cosine", "step"])
    g.add_argument("--lr-sgd", type=float, default=1e-3, help="lr of SGD and of Lookahead/Nested over SGD")
    g.add_argument("--lr-adam", type=float, default=1e-3, help="lr of Adam and of Lookahead/Nested over Adam")
    g.add_argument("--trainer-args", default="", help="extra arguments for every run, e.g. \"--stem imagenet\"")
    h = p.add_argument_group("optimizers")
    h.add_argument("--k", type=int, default=5)
    h.add_argument("--alpha", type=float, default=0.5)
    h.add_argument("--s", type=int, default=5)
    h.add_argument("--h", type=float, default=0.5)
    h.add_argument("--grid-inner", default="adam", choices=["sgd", "adam", "adamw"], help="experiment 2's base")
    h.add_argument("--grid-k", type=lambda t: [int(v) for v in t.split(",")], default=[5, 10])
    h.add_argument("--grid-alpha", type=lambda t: [float(v) for v in t.split(",")], default=[0.5, 0.8])
    h.add_argument("--grid-s", type=lambda t: [int(v) for v in t.split(",")], default=[5, 10])
    h.add_argument("--grid-h", type=lambda t: [float(v) for v in t.split(",")], default=[0.5, 0.8])
    r = p.add_argument_group("execution")
    r.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="runs at once (one per core: single-threaded runs use a core fully and never wait on "
                        "each other, unlike one run's threads)")
    r.add_argument("--threads", type=int, default=1, help="threads per run (0: cores / jobs)")
    r.add_argument("--checkpoints", action="store_true",
                   help="checkpoint every run after each epoch and resume interrupted ones")
    r.add_argument("--force", action="store_true", help="rerun configurations that already finished")
    r.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    r.add_argument("--summarize-only", action="store_true", help="only rebuild results.md and the plots")
    r.add_argument("--report", nargs="+", metavar="METRICS", default=None,
                   help="no experiment: write --out/report.md (epoch table) and report.png from these metrics files")
    r.add_argument("--title", default="ResNet-18 training runs", help="--report: the table's and plot's title")
    a = p.parse_args(argv)
    if a.seeds < 1 or a.jobs < 1 or a.epochs < 1 or a.width < 1:
        p.error("--seeds, --jobs, --epochs and --width must be at least 1")
    if a.threads == 0:
        a.threads = max(1, (os.cpu_count() or 1) // a.jobs)
    return a


def main(argv):
    a = parse_args(argv)
    out = Path(a.out)
    if a.report:
        print(report_runs(a.report, out, a.title))
        print(f"\nexperiments: report in {out / 'report.md'}")
        return 0
    selected = []
    if a.experiment in ("1", "all"):
        selected.append((1, experiment1(a)))
    if a.experiment in ("2", "all"):
        selected.append((2, experiment2(a)))
    if a.only:
        pattern = re.compile(a.only)
        selected = [(e, [c for c in cs if pattern.search(c[0])]) for e, cs in selected]
    common = common_args(a)
    runs = [Run(exp, name, label, args, seed, out, a.trainer, common)
            for exp, configs in selected for name, label, args in configs for seed in range(a.seeds)]
    if not runs:
        print("experiments: no configuration selected", file=sys.stderr)
        return 2

    if a.dry_run:
        for r in runs:
            print(shlex.join(r.command))
        return 0

    failures = 0
    if not a.summarize_only:
        if not Path(a.trainer).is_file():
            print(f"experiments: trainer not found: {a.trainer} (build it: cmake --build build --target resnet18_train,"
                  " or pass --trainer)", file=sys.stderr)
            return 2
        todo = [r for r in runs if a.force or not r.done()]
        if a.force:
            for r in todo:
                for f in (r.metrics, r.checkpoint):
                    f.unlink(missing_ok=True)
        print(f"experiments: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run "
              f"({a.jobs} at a time, {a.threads} threads each); logs in {out / 'runs'}", flush=True)
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
            futures = {pool.submit(execute, r, a.checkpoints): r for r in todo}
            for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                r = futures[fut]
                rc, seconds = fut.result()
                epochs, _ = read_metrics(r.metrics)
                acc = epochs[-1].get("test_acc") if epochs else None
                status = f"test acc {100 * acc:.2f}%" if rc == 0 and acc is not None else f"FAILED (exit {rc}), see {r.log}"
                failures += rc != 0
                print(f"[{i}/{len(todo)}] {r.name} seed {r.seed}: {status} ({seconds / 60:.1f} min, "
                      f"{(time.monotonic() - start) / 60:.1f} min in all)", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    print(summarize(selected, runs, out, a))
    print(f"\nexperiments: report in {out / 'results.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
