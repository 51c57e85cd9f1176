#!/usr/bin/env python3
"""Writes tests/data/torch_reference.txt: PyTorch (float64) results that test_torch_reference.cpp reproduces.

The network is torchvision's resnet18 (BasicBlock, [2, 2, 2, 2]) written out here, since
torchvision is not installed; the CIFAR variant swaps in a 3x3 stride-1 stem and drops the
max pool. Weights and images come from closed formulas that the C++ test evaluates too,
with the weights defined in the C++ model's memory layout ([out][kh][kw][in]) and permuted
here to PyTorch's [out][in][kh][kw], so the test also pins down the layout mapping.

Run: /usr/bin/python3 examples/resnet18/tests/make_torch_reference.py  (PyTorch 1.13, CPU)
"""

import math
import os

import numpy as np
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
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, width, in_channels, num_classes, stem):
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        cin = width
        for stage in range(4):
            cout = width << stage
            blocks = [BasicBlock(cin, cout, 1 if stage == 0 else 2), BasicBlock(cout, cout, 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            cin = cout
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in range(4):
            x = getattr(self, f"layer{stage + 1}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def pattern(n, t, phase):
    j = np.arange(n, dtype=np.float64)
    return np.sin(1.3 * j + 0.7 * t + phase)


def model_layout_weights(name, shape, t):
    """Weights in the C++ model's layout, as the C++ test computes them."""
    n = int(np.prod(shape))
    s = pattern(n, t, 0.1)
    if name.endswith("running_mean") or name.endswith("running_var"):
        raise ValueError(name)
    if len(shape) == 4 or name == "fc.weight":
        fan_in = n // shape[0]
        return s / math.sqrt(fan_in)
    if name == "fc.bias":
        return 0.1 * s
    if name.endswith(".weight"):  # batch norm
        return 1.0 + 0.2 * s
    return 0.2 * s  # batch-norm bias


def to_model_layout(name, tensor):
    t = tensor.detach()
    if t.dim() == 4:
        t = t.permute(0, 2, 3, 1)  # OIHW -> OHWI
    return t.contiguous().reshape(-1).numpy()


def run_case(out, tag, width, in_channels, size, batch, stem):
    torch.manual_seed(0)
    net = ResNet18(width, in_channels, 10, stem).double()
    params = list(net.named_parameters())
    for t, (name, p) in enumerate(params):
        w = model_layout_weights(name, list(p.shape) if p.dim() != 4 else
                                 [p.shape[0], p.shape[2], p.shape[3], p.shape[1]], t)
        w = torch.from_numpy(w)
        if p.dim() == 4:
            o, i, kh, kw = p.shape
            w = w.reshape(o, kh, kw, i).permute(0, 3, 1, 2)
        with torch.no_grad():
            p.copy_(w.reshape(p.shape))
    n_img = batch * in_channels * size * size
    x = torch.from_numpy(np.sin(0.37 * np.arange(n_img, dtype=np.float64) + 0.5)).reshape(batch, in_channels, size, size)
    labels = torch.tensor([(3 * i + 1) % 10 for i in range(batch)])

    net.train()
    logits = net(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    eval_logits = None
    net.eval()
    with torch.no_grad():
        eval_logits = net(x)

    def line(key, values):
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        out.write(f"{tag}.{key} {values.size} " + " ".join(repr(float(v)) for v in values) + "\n")

    # logits: batch x classes in PyTorch = column n of the C++ classes x batch matrix.
    line("train_logits", logits.detach().numpy())
    line("loss", [loss.item()])
    line("eval_logits", eval_logits.numpy())
    for t, (name, p) in enumerate(params):
        g = to_model_layout(name, p.grad)
        r = pattern(g.size, t, 0.9)
        line("grad." + name, [np.linalg.norm(g), float(np.dot(g, r))])
    for t, (name, b) in enumerate((n, b) for n, b in net.named_buffers() if "running" in n):
        v = b.numpy()
        line("buffer." + name, [np.linalg.norm(v), float(np.dot(v, pattern(v.size, t, 0.9)))])


def main():
    torch.set_num_threads(1)
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "data"), exist_ok=True)
    path = os.path.join(here, "data", "torch_reference.txt")
    with open(path, "w") as out:
        out.write(f"# generated by make_torch_reference.py with PyTorch {torch.__version__}, float64\n")
        run_case(out, "cifar", width=64, in_channels=3, size=16, batch=2, stem="cifar")
        run_case(out, "imagenet", width=64, in_channels=1, size=32, batch=3, stem="imagenet")
    print("wrote", path)


if __name__ == "__main__":
    main()
