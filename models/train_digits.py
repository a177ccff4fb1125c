"""Train the demo SOFT model on scikit-learn's handwritten digits (CPU, a few minutes).

    pip install torch scikit-learn numpy
    python3 models/train_digits.py

Writes, next to this file, in models/digits/:
  soft_digits.pth    the trained state dict, in the reference implementation's key names
  test_images.npy    the held-out split, f32 [N, 8, 8], raw pixel values 0..16
  test_labels.npy    its labels, f32 [N]
  test_logits.npy    PyTorch's f32 logits on the split, f32 [N, 10] (the engine is tested against them)

The model follows ../shared/SOFT-SPEC.md (SOFT blocks with Gaussian kernels and the
Newton-Schulz pseudo-inverse in stages 1-3, softmax blocks in stage 4), with widths sized
for a microcontroller. Preprocessing, shared with `soft demo`: pixel/16, nearest-neighbour
upsampling 8x8 -> 64x64 (every stage then has 2x2 landmarks), (x - 0.5) / 0.5, the same
plane in all three channels.
"""
import math
import pathlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = pathlib.Path(__file__).parent / "digits"
SEED = 0
WIDTHS = [16, 32, 64, 96]
HEADS = [1, 2, 4, 6]
DEPTHS = [1, 1, 2, 1]
STEM = 16
RATIOS = [8, 4, 2]
VCONV = [9, 5, 3]
GRIDS = [16, 8, 4, 2]  # native input 64x64
CLASSES = 10
NEWTON_ITERS = 20


def preprocess(images):
    """[N, 8, 8] digits (0..16) -> [N, 3, 64, 64] normalised input."""
    x = torch.as_tensor(images, dtype=torch.float32) / 16.0
    x = x.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    x = (x - 0.5) / 0.5
    return x[:, None].repeat(1, 3, 1, 1)


def conv_bn(cin, cout, stride):
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]


class PatchEmbed(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.proj = nn.Sequential(*layers)

    def forward(self, x):
        x = self.proj(x)
        _, _, h, w = x.shape
        return x.flatten(2).transpose(1, 2), h, w


def gaussian(a, b):
    """exp(-|a_i - b_j|^2 / 2) as |a|^2 + |b|^2 - 2 a.b, like the reference."""
    d2 = (a**2).sum(-1, keepdim=True) + (b**2).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
    return torch.exp(-d2 / 2)


def newton_pinv(k2, iters):
    eye = torch.eye(k2.shape[-1], device=k2.device)
    alpha = 0.9 * 2 / k2.sum(-1).max(-1)[0] ** 2
    p = k2 + 0.01 * eye
    v = alpha[..., None, None] * p
    for _ in range(iters):
        v = 2 * v - v @ p @ v
    return v


class Kernel(nn.Module):
    """Holds the landmark and V-conv parameters under the reference's names."""

    def __init__(self, d, heads, ratio, conv):
        super().__init__()
        self.Qlandmark_op = nn.Conv2d(d, d, ratio, ratio, bias=False)
        self.Qnorm_act = nn.Sequential(nn.LayerNorm(d), nn.GELU())
        self.conv = nn.Conv2d(heads, heads, conv, padding=conv // 2, groups=heads, bias=False)


class SoftAttention(nn.Module):
    def __init__(self, dim, heads, ratio, conv):
        super().__init__()
        self.h, self.d = heads, dim // heads
        self.W_q = nn.Linear(dim, dim)
        self.W_v = nn.Linear(dim, dim)
        self.attn = Kernel(self.d, heads, ratio, conv)
        self.ff = nn.Linear(dim, dim)

    def forward(self, x, H, W):
        b, n, c = x.shape
        h, d = self.h, self.d
        q = self.W_q(x).reshape(b, n, h, d).transpose(1, 2) / math.sqrt(math.sqrt(d))
        v = self.W_v(x).reshape(b, n, h, d).transpose(1, 2)
        lm = self.attn.Qlandmark_op(q.reshape(b * h, H, W, d).permute(0, 3, 1, 2))
        lm = self.attn.Qnorm_act(lm.flatten(2).transpose(1, 2).reshape(b, h, -1, d))
        k1 = gaussian(q, lm)
        k2 = gaussian(lm, lm)
        out = (k1 @ newton_pinv(k2, NEWTON_ITERS)) @ (k1.transpose(-1, -2) @ v)
        vc = v.reshape(b, h, H, W, d).permute(0, 4, 1, 2, 3).reshape(b * d, h, H, W)
        out = out + self.attn.conv(vc).reshape(b, d, h, H, W).flatten(3).permute(0, 2, 3, 1)
        return self.ff(out.transpose(1, 2).reshape(b, n, c))


class SoftBlockInner(nn.Module):
    def __init__(self, dim, heads, ratio, conv):
        super().__init__()
        self.mha = SoftAttention(dim, heads, ratio, conv)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.ff2 = nn.Linear(4 * dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x, H, W):
        x = self.norm1(x + self.mha(x, H, W))
        return self.norm2(x + self.ff2(F.gelu(self.ff1(x), approximate="tanh")))


class SoftBlock(nn.Module):
    def __init__(self, *args):
        super().__init__()
        self.att = SoftBlockInner(*args)

    def forward(self, x, H, W):
        return self.att(x, H, W)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.h = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        d = c // self.h
        q = self.q(x).reshape(b, n, self.h, d).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.h, d).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * d**-0.5).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block4(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resample(pos, grid, h, w):
    c = pos.shape[-1]
    g = pos.reshape(1, grid, grid, c).permute(0, 3, 1, 2)
    if (h, w) != (grid, grid):
        g = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False)
    return g.flatten(2).transpose(1, 2)


class SoftDigits(nn.Module):
    def __init__(self):
        super().__init__()
        c = WIDTHS
        self.patch_embed1 = PatchEmbed(conv_bn(3, STEM, 2) + conv_bn(STEM, STEM, 1) + conv_bn(STEM, c[0], 2))
        for s in range(1, 4):
            setattr(self, f"patch_embed{s + 1}", PatchEmbed(conv_bn(c[s - 1], c[s], 2)))
        for s in range(3):
            setattr(self, f"pos_embed{s + 1}", nn.Parameter(torch.randn(1, GRIDS[s] ** 2, c[s]) * 0.02))
            setattr(self, f"block{s + 1}", nn.ModuleList(
                SoftBlock(c[s], HEADS[s], RATIOS[s], VCONV[s]) for _ in range(DEPTHS[s])))
        self.pos_embed4 = nn.Parameter(torch.randn(1, 1 + GRIDS[3] ** 2, c[3]) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, c[3]) * 0.02)
        self.block4 = nn.ModuleList(Block4(c[3], HEADS[3]) for _ in range(DEPTHS[3]))
        self.norm = nn.LayerNorm(c[3], eps=1e-6)
        self.head = nn.Linear(c[3], CLASSES)

    def forward(self, x):
        b = x.shape[0]
        for s in range(3):
            x, h, w = getattr(self, f"patch_embed{s + 1}")(x)
            x = x + resample(getattr(self, f"pos_embed{s + 1}"), GRIDS[s], h, w)
            for blk in getattr(self, f"block{s + 1}"):
                x = blk(x, h, w)
            x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        x, h, w = self.patch_embed4(x)
        pos = torch.cat([self.pos_embed4[:, :1], resample(self.pos_embed4[:, 1:], GRIDS[3], h, w)], 1)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], 1) + pos
        for blk in self.block4:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    digits = load_digits()
    images, labels = digits.images.astype(np.float32), digits.target
    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=0.2, random_state=SEED, stratify=labels)
    xtr, ytr = preprocess(tr_x), torch.as_tensor(tr_y)
    xte, yte = preprocess(te_x), torch.as_tensor(te_y)
    model = SoftDigits()
    epochs, batch = 60, 64
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * math.ceil(len(xtr) / batch))
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xtr))
        for i in range(0, len(xtr), batch):
            idx = order[i:i + batch]
            x = xtr[idx]
            # Random shifts of up to one source pixel (8 px at 64x64), background-filled.
            dy, dx = torch.randint(-8, 9, (2,)).tolist()
            x = torch.roll(x, (dy, dx), (2, 3))
            if dy > 0:
                x[:, :, :dy] = -1
            elif dy < 0:
                x[:, :, dy:] = -1
            if dx > 0:
                x[:, :, :, :dx] = -1
            elif dx < 0:
                x[:, :, :, dx:] = -1
            loss = F.cross_entropy(model(x), ytr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            model.eval()
            with torch.no_grad():
                acc = (model(xte).argmax(1) == yte).float().mean().item()
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {acc:.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        logits = model(xte)
    OUT.mkdir(exist_ok=True)
    torch.save(model.state_dict(), OUT / "soft_digits.pth")
    np.save(OUT / "test_images.npy", te_x.astype(np.float32))
    np.save(OUT / "test_labels.npy", te_y.astype(np.float32))
    np.save(OUT / "test_logits.npy", logits.numpy().astype(np.float32))
    acc = (logits.argmax(1) == yte).float().mean().item()
    print(f"saved {OUT}: {len(te_y)} test digits, PyTorch f32 accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
