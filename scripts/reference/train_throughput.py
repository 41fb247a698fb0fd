"""PyTorch twin of `caption train --config CONFIG --benchmark N`: the same captioner (torchvision's
ResNet at the config's depth and width, or MobileNetV2; Show, Attend and Tell's attention LSTM with
the config's sizes, or a Transformer decoder) trained with the same step: teacher-forced
cross-entropy with label smoothing, the doubly stochastic attention penalty, AdamW, gradient
clipping. Inputs are random tensors of the config's shapes (batch_size images of image.size
pixels, captions_per_image captions of --length tokens each, a --vocab word vocabulary), so the
numbers measure compute, not data loading. A frozen encoder with the feature cache on trains the
decoder alone on features of the encoder's grid shape, as `caption train` does.

usage: python train_throughput.py --config configs/shapes.yaml [--steps 20] [--vocab 59]
                                  [--length 12] [--captions 5] [--batch N] [--device cpu|cuda]
Prints one JSON line (first step not timed), like `caption train --benchmark`.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torchvision
import yaml
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

p = argparse.ArgumentParser()
p.add_argument("--config", required=True)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--vocab", type=int, default=59, help="vocabulary size (the run's log prints it)")
p.add_argument("--length", type=int, default=12, help="tokens per caption row, <bos> included")
p.add_argument("--captions", type=int, default=5, help="captions per image when captions_per_image is 0")
p.add_argument("--batch", type=int, help="images per step instead of the config's train.batch_size")
p.add_argument("--device", default="cpu")
a = p.parse_args()
dev = torch.device(a.device)
config = yaml.safe_load(open(a.config))
model_cfg, train_cfg = config.get("model", {}), config.get("train", {})
enc_cfg = model_cfg.get("encoder", {})
dec_cfg = model_cfg.get("decoder", {"kind": "attention_lstm"})
size = config.get("data", {}).get("image", {}).get("size", 224)
batch = a.batch or train_cfg.get("batch_size", 32)
per_image = train_cfg.get("captions_per_image", 0) or a.captions
finetune = enc_cfg.get("finetune", "frozen")
network = enc_cfg.get("network", "resnet18")
torch.manual_seed(config.get("seed", 42))

DEFAULT_LAYERS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


class NarrowResNet(ResNet):
    """torchvision's ResNet with a base width other than 64 (everything else unchanged)."""

    def __init__(self, block, layers, width):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.out_channels = width * 8 * block.expansion

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


if network.startswith("resnet"):
    block = BasicBlock if network in ("resnet18", "resnet34") else Bottleneck
    encoder = NarrowResNet(block, enc_cfg.get("layers") or DEFAULT_LAYERS[network], enc_cfg.get("width", 64))
    channels = encoder.out_channels
else:
    encoder = torchvision.models.mobilenet_v2(weights=None, width_mult=enc_cfg.get("width_mult", 1.0)).features
    channels = encoder[-1][0].out_channels
encoder = encoder.to(dev)
grid = size // 32
frozen = finetune == "frozen"
cached = frozen and train_cfg.get("feature_cache", True)


class AttentionLstm(nn.Module):
    """Show, Attend and Tell: h/c from mean features, additive attention, gating scalar."""

    def __init__(self, feat, vocab, emb, hid, att, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.init_h, self.init_c = nn.Linear(feat, hid), nn.Linear(feat, hid)
        self.att_feat, self.att_hid, self.att_out = nn.Linear(feat, att), nn.Linear(hid, att), nn.Linear(att, 1)
        self.f_beta = nn.Linear(hid, feat)
        self.cell = nn.LSTMCell(emb + feat, hid)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hid, vocab)

    def forward(self, regions, tokens):
        mean = regions.mean(1)
        h, c = torch.tanh(self.init_h(mean)), self.init_c(mean)
        keys = self.att_feat(regions)
        logits, alphas = [], []
        for t in range(tokens.shape[1]):
            alpha = torch.softmax(self.att_out(torch.tanh(keys + self.att_hid(h).unsqueeze(1))).squeeze(2), 1)
            context = (alpha.unsqueeze(2) * regions).sum(1) * torch.sigmoid(self.f_beta(h))
            h, c = self.cell(torch.cat([self.embed(tokens[:, t]), context], 1), (h, c))
            logits.append(self.out(self.drop(h)))
            alphas.append(alpha)
        return torch.stack(logits, 1), torch.stack(alphas, 1)


class Transformer(nn.Module):
    def __init__(self, feat, vocab, d_model, heads, layers, d_ff, dropout, positions=64):
        super().__init__()
        self.project = nn.Linear(feat, d_model)
        self.embed, self.position = nn.Embedding(vocab, d_model), nn.Embedding(positions, d_model)
        layer = nn.TransformerDecoderLayer(d_model, heads, d_ff, dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.out = nn.Linear(d_model, vocab)

    def forward(self, regions, tokens):
        t = tokens.shape[1]
        x = self.embed(tokens) + self.position(torch.arange(t, device=tokens.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=tokens.device)
        return self.out(self.decoder(x, self.project(regions), tgt_mask=mask, tgt_is_causal=True)), None


if dec_cfg.get("kind", "attention_lstm") == "attention_lstm":
    decoder = AttentionLstm(channels, a.vocab, dec_cfg.get("embedding_size", 512), dec_cfg.get("hidden_size", 512),
                            dec_cfg.get("attention_size", 512), dec_cfg.get("dropout", 0.5))
else:
    decoder = Transformer(channels, a.vocab, dec_cfg.get("d_model", 512), dec_cfg.get("num_heads", 8),
                          dec_cfg.get("num_layers", 3), dec_cfg.get("d_ff", 2048), dec_cfg.get("dropout", 0.1))
decoder = decoder.to(dev).train()
params = list(decoder.parameters()) + ([] if frozen else list(encoder.parameters()))
encoder.train(not frozen)
optimizer = torch.optim.AdamW(params, lr=train_cfg.get("lr", 4e-4), weight_decay=train_cfg.get("weight_decay", 1e-4))
loss_fn = nn.CrossEntropyLoss(label_smoothing=train_cfg.get("label_smoothing", 0.1))
att_reg = train_cfg.get("attention_regularizer", 0.02)
clip = train_cfg.get("clip_grad_norm", 5.0)

images = torch.randn(batch, 3, size, size, device=dev)
features = torch.randn(batch, channels, grid, grid, device=dev).relu()
rows = batch * per_image
row_image = torch.arange(batch, device=dev).repeat_interleave(per_image)
tokens = torch.randint(4, a.vocab, (rows, a.length + 1), device=dev)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


seconds = 0.0
for step in range(a.steps + 1):
    start = time.perf_counter()
    if cached:
        fmap = features
    elif frozen:
        with torch.no_grad():
            fmap = encoder(images)
    else:
        fmap = encoder(images)
    regions = fmap.flatten(2).transpose(1, 2)[row_image]
    logits, alphas = decoder(regions, tokens[:, :-1])
    loss = loss_fn(logits.reshape(-1, a.vocab), tokens[:, 1:].reshape(-1))
    if alphas is not None and att_reg > 0:
        loss = loss + att_reg * ((1 - alphas.sum(1)) ** 2).sum(1).mean()
    optimizer.zero_grad()
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    sync()
    if step > 0:
        seconds += time.perf_counter() - start
print(json.dumps({"framework": f"pytorch {torch.__version__}", "device": a.device, "threads": torch.get_num_threads(),
                  "config": a.config, "steps": a.steps, "from_features": cached, "vocab": a.vocab, "length": a.length,
                  "images_per_s": batch * a.steps / seconds, "caption_pairs_per_s": rows * a.steps / seconds}))
