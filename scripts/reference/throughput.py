"""PyTorch reference for `cargo run --release -p caption-model --example throughput`: the same
measurements with torchvision's encoders and a Show, Attend and Tell decoder of the same sizes
(embedding 512, hidden 512, attention 512, dropout 0.5, gating scalar, h/c from mean features).

usage: python throughput.py [--encoder resnet18] [--batch 8] [--size 224] [--decoder-batch 32]
                            [--vocab 5000] [--length 16] [--iters 5] [--device cpu|cuda]
Prints one JSON line per measurement, first iteration of each not timed.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torchvision

p = argparse.ArgumentParser()
p.add_argument("--encoder", default="resnet18")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--size", type=int, default=224)
p.add_argument("--decoder-batch", type=int, default=32)
p.add_argument("--vocab", type=int, default=5000)
p.add_argument("--length", type=int, default=16)
p.add_argument("--iters", type=int, default=5)
p.add_argument("--device", default="cpu")
a = p.parse_args()
dev = torch.device(a.device)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


net = getattr(torchvision.models, a.encoder)()
features = net.features if a.encoder.startswith("mobilenet") else nn.Sequential(*list(net.children())[:-2])
features = features.to(dev).eval()
images = torch.randn(a.batch, 3, a.size, a.size, device=dev)
seconds = 0.0
with torch.no_grad():
    for i in range(a.iters + 1):
        t = time.perf_counter()
        out = features(images)
        out.mean((2, 3)).cpu()
        sync()
        if i > 0:
            seconds += time.perf_counter() - t
channels = out.shape[1]
print(json.dumps({"measure": "encoder_inference", "framework": f"pytorch {torch.__version__}", "threads": torch.get_num_threads(),
                  "device": a.device, "encoder": a.encoder, "batch": a.batch, "size": a.size,
                  "images_per_s": a.batch * a.iters / seconds}))


class AttentionLstm(nn.Module):
    def __init__(self, feat, vocab, emb=512, hid=512, att=512, dropout=0.5):
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
        logits = []
        for t in range(tokens.shape[1]):
            alpha = torch.softmax(self.att_out(torch.tanh(keys + self.att_hid(h).unsqueeze(1))).squeeze(2), 1)
            context = (alpha.unsqueeze(2) * regions).sum(1) * torch.sigmoid(self.f_beta(h))
            h, c = self.cell(torch.cat([self.embed(tokens[:, t]), context], 1), (h, c))
            logits.append(self.out(self.drop(h)))
        return torch.stack(logits, 1)


grid = a.size // 32
n = a.decoder_batch
decoder = AttentionLstm(channels, a.vocab).to(dev).train()
optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4, weight_decay=0.01)
regions = torch.rand(n, grid * grid, channels, device=dev) * 2
tokens = torch.randint(4, a.vocab, (n, a.length + 1), device=dev)
loss_fn = nn.CrossEntropyLoss()
seconds = 0.0
for i in range(a.iters + 1):
    t = time.perf_counter()
    logits = decoder(regions, tokens[:, :-1])
    loss = loss_fn(logits.reshape(-1, a.vocab), tokens[:, 1:].reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    sync()
    if i > 0:
        seconds += time.perf_counter() - t
print(json.dumps({"measure": "decoder_training", "framework": f"pytorch {torch.__version__}", "threads": torch.get_num_threads(),
                  "device": a.device, "decoder": "lstm", "features": [grid * grid, channels], "batch": n,
                  "length": a.length, "vocab": a.vocab, "caption_pairs_per_s": n * a.iters / seconds}))
