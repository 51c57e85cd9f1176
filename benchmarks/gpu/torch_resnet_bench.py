#!/usr/bin/env python3
"""PyTorch counterpart of resnet18_gpu_bench: torchvision ResNet-18 with the CIFAR stem, training images/s at one batch size.

Settings (each a fresh model, Adam(fused=True), synthetic 32x32x3 data held on the GPU):
  fp32_nchw  float32, default memory format (cuDNN convolutions in TF32: PyTorch's default)
  fp32_cl    float32, channels_last
  bf16_cl    autocast bf16, channels_last (float32 master weights)
Each step gathers a random batch, normalizes it and flips half of it on the GPU (a cheap
stand-in for the nestla trainer's device augmentation), then forward, backward and the
optimizer step. The loss is read back once at the end (PyTorch's best case; the nestla
trainer reads each batch's loss, overlapped with the backward pass).
Prints "RESULT torch_resnet18_<setting>_ips <images/s>" lines for device_check.sh.
"""
import argparse
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--settings", default="fp32_nchw,fp32_cl,bf16_cl")
    a = p.parse_args()

    import torch
    import torch.nn as nn
    import torchvision

    if not torch.cuda.is_available():
        print("torch_resnet_bench: SKIPPED, torch sees no CUDA device")
        return 77
    torch.backends.cudnn.benchmark = True  # like the nestla trainer's cudnnFind
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name(0)}; cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
          f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")

    g = torch.Generator(device=dev).manual_seed(0)
    data = torch.rand(a.images, 3, 32, 32, device=dev, generator=g)
    labels = torch.randint(0, 10, (a.images,), device=dev, generator=g)
    mean = torch.tensor([0.4914, 0.4822, 0.4465], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616], device=dev).view(1, 3, 1, 1)

    def make_model(channels_last):
        torch.manual_seed(0)
        m = torchvision.models.resnet18(num_classes=10)
        m.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
        m = m.to(dev)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m

    for setting in a.settings.split(","):
        channels_last = setting.endswith("_cl")
        bf16 = setting.startswith("bf16")
        model = make_model(channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            idx = torch.randint(0, a.images, (a.batch,), device=dev, generator=g)
            x = (data[idx] - mean) / std
            flip = torch.rand(a.batch, device=dev, generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        for _ in range(a.warmup):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            last = step()
        torch.cuda.synchronize()
        s = time.perf_counter() - t0
        ips = a.steps * a.batch / s
        print(f"{setting}: batch {a.batch}, {ips:.0f} images/s ({1e3 * s / a.steps:.2f} ms/step), last loss {last.item():.4f}")
        print(f"RESULT torch_resnet18_{setting}_ips {ips:.1f}")
        sys.stdout.flush()
        del model, opt
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
