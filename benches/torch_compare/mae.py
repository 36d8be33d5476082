"""The tiny doppel sensor model (masked autoencoder over patch tokens) in PyTorch, to time
its training step on the CPU next to doppel's burn version. Same shapes, same layers
(pre-norm transformer blocks, GELU, no dropout), same masking and loss, same optimiser.

Usage: python mae.py --data ETTh1.csv [--steps 200] [--batch 32] [--threads 2]
Prints one JSON line: tokens/s over the timed steps (after a warm-up).
"""

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

SIZES = {  # d_model, heads, encoder layers, decoder d_model, decoder layers
    "tiny": (64, 4, 2, 32, 1),
    "small": (128, 4, 4, 64, 2),
    "base": (256, 8, 8, 128, 4),
}


def block(d, heads, layers):
    layer = nn.TransformerEncoderLayer(
        d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class SensorMAE(nn.Module):
    def __init__(self, channels, patch, patches, size):
        super().__init__()
        d, heads, enc, dd, dec = SIZES[size]
        self.patch_embed = nn.Linear(2 * patch, d)
        self.channel_embed = nn.Embedding(channels, d)
        self.position_embed = nn.Embedding(patches, d)
        self.encoder = block(d, heads, enc)
        self.encoder_norm = nn.LayerNorm(d)
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dd) * 0.02)
        self.decoder_channel_embed = nn.Embedding(channels, dd)
        self.decoder_position_embed = nn.Embedding(patches, dd)
        self.decoder = block(dd, heads, dec)
        self.decoder_norm = nn.LayerNorm(dd)
        self.head = nn.Linear(dd, patch)

    def forward(self, features, channel, position, order, restore, visible):
        # features [B, L, 2P]; channel, position, order, restore [B, L]
        x = self.patch_embed(features) + self.channel_embed(channel) + self.position_embed(position)
        b, l, d = x.shape
        keep = order[:, :visible]
        x = torch.gather(x, 1, keep.unsqueeze(2).expand(b, visible, d))  # [B, K, d]
        x = self.encoder_norm(self.encoder(x))
        x = self.decoder_embed(x)  # [B, K, dd]
        dd = x.shape[2]
        x = torch.cat([x, self.mask_token.expand(b, l - visible, dd)], 1)  # [B, L, dd]
        x = torch.gather(x, 1, restore.unsqueeze(2).expand(b, l, dd))
        x = x + self.decoder_channel_embed(channel) + self.decoder_position_embed(position)
        return self.head(self.decoder_norm(self.decoder(x)))  # [B, L, P]


def read_csv(path):
    data = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float32)[:, 1:]
    train = data[: int(len(data) * 0.8)]
    return (data - train.mean(0)) / train.std(0)


def make_batch(data, rng, batch, patch, patches, mask_ratio):
    window = patch * patches
    channels = data.shape[1]
    starts = rng.integers(0, len(data) - window, size=batch)
    w = np.stack([data[s : s + window].T for s in starts])  # [B, C, T]
    tokens = w.reshape(batch, channels * patches, patch)  # [B, L, P]
    l = channels * patches
    visible = l - int(round(l * mask_ratio))
    order = np.argsort(rng.random((batch, l)), axis=1)
    restore = np.argsort(order, axis=1)
    hidden = restore >= visible  # [B, L]
    shown = np.repeat(~hidden[:, :, None], patch, axis=2).astype(np.float32)
    features = np.concatenate([tokens * shown, shown], axis=2)
    channel = np.repeat(np.arange(channels), patches)[None].repeat(batch, 0)
    position = np.tile(np.arange(patches), channels)[None].repeat(batch, 0)
    weight = 1.0 - shown
    t = torch.from_numpy
    return (t(features), t(channel), t(position), t(order), t(restore), visible,
            t(np.ascontiguousarray(tokens)), t(weight))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--patches", type=int, default=12)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = read_csv(args.data)
    model = SensorMAE(data.shape[1], args.patch, args.patches, args.size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    tokens_per_step = args.batch * data.shape[1] * args.patches
    started = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            started = time.perf_counter()
        features, channel, position, order, restore, visible, target, weight = make_batch(
            data, rng, args.batch, args.patch, args.patches, 0.8)
        out = model(features, channel, position, order, restore, visible)
        loss = ((out - target) ** 2 * weight).sum() / weight.sum().clamp_min(1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - started
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        "size": args.size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": args.threads,
        "steps": args.steps,
        "tokens_per_second": tokens_per_step * args.steps / seconds,
        "final_loss": loss.item(),
    }))


if __name__ == "__main__":
    main()
