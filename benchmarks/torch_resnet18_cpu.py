#!/usr/bin/env python3
"""PyTorch CPU counterpart of resnet18_bench: CIFAR-stem ResNet-18, training images/s (forward + backward + Adam step).

The network is defined here (torchvision is not installed on Debian): BasicBlocks [2,2,2,2], widths 64-128-256-512,
3x3 stride-1 stem conv without max pool, BatchNorm, ReLU, 1x1 stride-2 projection shortcuts, global average pool,
fc to 10 classes. Synthetic 32x32x3 inputs. Run it with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (see
shared/design/perf-notes.md), as benchmarks/resnet18_cpu_vs_torch.sh does.
Prints "RESULT torch <format> batch <B> <images/s> <median ms>" lines.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def bench(batch, channels_last, steps, warmup):
    torch.manual_seed(0)
    model = ResNet18().train()
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", default="64,128")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--formats", default="nchw,cl", help="comma list of nchw and cl (channels_last)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for batch in (int(b) for b in a.batch.split(",")):
        for fmt in a.formats.split(","):
            med = bench(batch, fmt == "cl", a.steps, a.warmup)
            print(f"RESULT torch {fmt} batch {batch} {batch / med:.2f} {1e3 * med:.1f}", flush=True)


if __name__ == "__main__":
    main()
