#!/usr/bin/env python3
"""What int8 token maps (`--activations i8`, issue 11) would cost in accuracy: a PyTorch simulation.

    ~/.cache/soft-peers-venv/bin/python scripts/simulate_i8_maps.py
    ~/.cache/soft-peers-venv/bin/python scripts/simulate_i8_maps.py --engine target/release/soft --json r.json

Needs torch and numpy only (CPU; under a minute, plus about a minute for --engine, which
runs `soft convert` and one `soft run` per input). Reads the demo model (models/digits/)
and the golden cases (tests/golden/{micro_64,norm_micro_64,deep_96_timm}).

The engine computes every block in f32 on small chunks and keeps only a few buffers in its
token type E (f16 today). This script runs the network of ../shared/SOFT-SPEC.md in f32
(PyTorch; BatchNorm folded in f64 as `soft convert` folds it) and rounds values at exactly
the places where the engine writes E:

  maps  the stem's output; each patch embedding's output; the map after the position
        embedding (stage 4: with the class token); the map after every block; the final
        norm's output (the head reads the class token from it);
  aux   the stem's line buffers (conv1 and conv2 output rows), the V ring the depthwise
        V-convolution reads (stages 1-3; K1'V uses f32 V), the stage-4 keys and values.

Storage formats, per token (one row of C channels):
  f32  no rounding;
  f16  round to the nearest half (what the engine does today);
  i8   symmetric int8 with one f32 scale per token, as the W8A8 kernels quantise:
       max = max|x|, q = round_half_even(x * (127/max)), x' = q * (max/127).

Variants (maps / aux per stage, linear layers); "s123" = stem and stages 1-3 in i8,
stage 4 and the final norm in f16:
  f32           f32 / f32        float   the reference numerics
  f16           f16 / f16        float   the engine today (checked against it with --engine)
  i8            i8  / f16        float   int8 token maps, the other E buffers f16
  i8-all        i8  / i8         float   int8 in every E buffer (E = i8 throughout)
  i8-s123       s123 / s123      float   every E buffer of stages 1-3 int8, stage 4 f16
  w8a8+f16      f16 / f16        W8A8    the engine's `convert --dtype w8a8` blob today
  w8a8+i8       i8  / f16        W8A8
  w8a8+i8-s123  s123 / s123      W8A8
W8A8: weights int8 per output channel (scale max|w|/127, round half to even); the input of
every linear layer and convolution quantised per token as above (a convolution: per output
pixel, its 3x3xC_in taps; the landmark convolution: per landmark and head, its r*r*d
taps); exact integer sums, then acc * s_x * s_w + bias; vectors (biases, norms, position
embeddings, V-conv kernels) in f16, as the W8A8 blob stores them. Weights are f32 in the
other variants.

Prints, for each variant:
  demo      top-1 accuracy on the 360 test digits, top-1 agreement with the f32 variant,
            worst and mean over images of max|logit - f32 logit| / max|f32 logit|;
  noisy     the same on the split plus Gaussian noise (--noise, --noise-draws): f32 is
            about 87 % right there and many margins are small, so decisions can flip;
  points    per storage point of the demo's f32 run: the SQNR per-token int8 would have
            there and the crest factor max|x|/rms(x) per token (SQNR ~ 52.9 dB - 20 log10 crest);
  golden    per case: top-1 against the reference logits (one input each) and
            max|logit - reference| / max|reference|; and, since one input says little,
            agreement and worst relative error against the f32 variant on --random inputs
            drawn from N(0, 1) (the golden models are untrained);
  checks    the f32 variant against the reference (demo: models/digits/test_logits.npy;
            golden: every stored stage and the logits); how far a 1e-7 relative input
            change moves each variant (the noise floor of any sim-vs-engine comparison);
            with --engine SOFT, the f16 and w8a8+f16 variants against the engine itself
            (`soft run --activations f16`, f32 and w8a8 blobs) on the demo split and the
            golden inputs.
"""
import argparse
import json
import math
import pathlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits"
GOLDEN = ROOT / "tests" / "golden"
CASES = ["micro_64", "norm_micro_64", "deep_96_timm"]
DEMO_STAGE4_HEADS = 6  # models/train_digits.py HEADS[3]; shapes cannot tell it


# ---------------------------------------------------------------- storage formats
def quant_rows(x):
    """Per-row (last axis) symmetric int8: (q as float, scale), as soft-kernels' quantize."""
    top = x.abs().amax(-1, keepdim=True)
    live = top > 0
    inverse = torch.where(live, 127.0 / top, torch.zeros_like(top))
    scale = torch.where(live, top / 127.0, torch.zeros_like(top))
    q = torch.round(x * inverse).clamp(-127.0, 127.0)  # torch.round: half to even
    return q, scale


def to_i8(x):
    q, s = quant_rows(x)
    return q * s


def to_f16(x):
    return x.half().to(x.dtype)


STORE = {"f32": lambda x: x, "f16": to_f16, "i8": to_i8}


@dataclass(frozen=True)
class Variant:
    """Storage format of the maps and of the other E buffers, per stage (0: stem and
    stage 1, ..., 3: stage 4 and the final norm), and whether linear layers are W8A8."""

    name: str
    maps: tuple
    aux: tuple
    w8a8: bool


def every(fmt):
    return (fmt,) * 4


S123 = ("i8", "i8", "i8", "f16")
VARIANTS = [
    Variant("f32", every("f32"), every("f32"), False),
    Variant("f16", every("f16"), every("f16"), False),
    Variant("i8", every("i8"), every("f16"), False),
    Variant("i8-all", every("i8"), every("i8"), False),
    Variant("i8-s123", S123, S123, False),
    Variant("w8a8+f16", every("f16"), every("f16"), True),
    Variant("w8a8+i8", every("i8"), every("f16"), True),
    Variant("w8a8+i8-s123", S123, S123, True),
]


# ---------------------------------------------------------------- checkpoint
def load_state(path):
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj.get("state_dict_ema") or obj["state_dict"]  # the reference evaluates EMA
    if isinstance(obj, dict) and "model" in obj and not torch.is_tensor(obj["model"]):
        obj = obj["model"]
    out = {}
    for k, v in obj.items():
        if torch.is_tensor(v):
            out[k[len("module."):] if k.startswith("module.") else k] = v.float()
    return out


def fold_bn(sd, conv, bn):
    """Conv + BatchNorm(eps 1e-5) folded in f64, as `soft convert` folds them."""
    w, b = sd[f"{conv}.weight"].double(), sd[f"{conv}.bias"].double()
    g, beta = sd[f"{bn}.weight"].double(), sd[f"{bn}.bias"].double()
    mean, var = sd[f"{bn}.running_mean"].double(), sd[f"{bn}.running_var"].double()
    s = g / torch.sqrt(var + 1e-5)
    dt = sd[f"{conv}.weight"].dtype
    return (w * s[:, None, None, None]).to(dt), ((b - mean) * s + beta).to(dt)


class Layer:
    """A linear layer or convolution: f32 weight [out, ...], bias, and its W8A8 form."""

    def __init__(self, w, b, w8a8, vec):
        self.w = w
        self.b = None if b is None else vec(b)
        if w8a8:
            flat = w.float().reshape(w.shape[0], -1)  # quantised in f32 as `soft convert` does
            top = flat.abs().amax(1, keepdim=True)
            s = torch.where(top > 0, top / 127.0, torch.ones_like(top))
            self.q = torch.round(flat / s).clamp(-127.0, 127.0).double()  # rintf
            self.s = s.reshape(-1).to(w.dtype)


# ---------------------------------------------------------------- the network
def layer_norm(x, w, b, eps):
    return F.layer_norm(x, x.shape[-1:], w, b, eps)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def gaussian(a, b):
    """exp(-|a_i - b_j|^2 / 2) as |a|^2 + |b|^2 - 2 a.b, like the reference."""
    d2 = (a**2).sum(-1, keepdim=True) + (b**2).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
    return torch.exp(-d2 / 2)


def newton_plain(k2, iters):
    eye = torch.eye(k2.shape[-1], dtype=k2.dtype)
    alpha = 0.9 * 2 / k2.sum(-1).max(-1)[0] ** 2
    p = k2 + 0.01 * eye
    v = alpha[..., None, None] * p
    for _ in range(iters):
        v = 2 * v - v @ p @ v
    return v


def newton_norm(k2, iters):
    """SOFT-Norm's inverse with batch-1 semantics per sample (max over heads)."""
    eye = torch.eye(k2.shape[-1], dtype=k2.dtype)
    alpha = 2 / k2.sum(-1).amax(dim=(1, 2)) ** 2  # [B]

    def pnorm(v):
        return (eye - k2 @ v).abs().sum(-2).amax(dim=(1, 2))

    v = alpha[:, None, None, None] * k2
    for _ in range(10):
        bad = pnorm(v) > 1.01
        if not bad.any():
            break
        alpha = torch.where(bad, alpha * 0.5, alpha)
        v = alpha[:, None, None, None] * k2
    for _ in range(iters):
        v = 2 * v - v @ k2 @ v
    d = 1 / k2.sum(-1, keepdim=True).sqrt()
    return d * v * d.transpose(-1, -2)


def resample(pos, h, w):
    """[1, G*G, C] grid -> [1, h*w, C], bilinear, align_corners=False."""
    g = int(round(math.sqrt(pos.shape[1])))
    c = pos.shape[-1]
    grid = pos.reshape(1, g, g, c).permute(0, 3, 1, 2)
    if (h, w) != (g, g):
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


class Sim:
    def __init__(self, sd, variant, stage4_heads, normalized, iters, dtype=torch.float32):
        """`dtype`: the arithmetic between storage points (f64 only to measure f32's share)."""
        sd = {k: v.to(dtype) for k, v in sd.items()}
        self.dtype = dtype
        self.v = variant
        self.normalized = normalized
        self.iters = iters
        self.stats = None  # {point: [sum x^2, sum i8 error^2, sum crest, tokens, max crest]}
        w8 = variant.w8a8
        vec = to_f16 if w8 else (lambda x: x)
        self.vec = vec
        self.stem = [Layer(*fold_bn(sd, f"patch_embed1.proj.{3 * i}", f"patch_embed1.proj.{3 * i + 1}"), w8, vec)
                     for i in range(3)]
        self.embed = [None] + [Layer(*fold_bn(sd, f"patch_embed{s + 1}.proj.0", f"patch_embed{s + 1}.proj.1"), w8, vec)
                               for s in range(1, 4)]
        self.pos = [vec(sd[f"pos_embed{s + 1}"]) for s in range(4)]
        self.cls = vec(sd["cls_token"])
        self.blocks = []
        for s in range(3):
            blocks, b = [], 0
            while f"block{s + 1}.{b}.att.mha.W_q.weight" in sd:
                p = f"block{s + 1}.{b}.att"
                lin = lambda k: Layer(sd[f"{p}.{k}.weight"], sd[f"{p}.{k}.bias"], w8, vec)  # noqa: E731
                lw = sd[f"{p}.mha.attn.Qlandmark_op.weight"]
                blocks.append(dict(
                    q=lin("mha.W_q"), v=lin("mha.W_v"), ff=lin("mha.ff"), ff1=lin("ff1"), ff2=lin("ff2"),
                    lm=Layer(lw, None, w8, vec), d=lw.shape[0], r=lw.shape[-1],
                    lm_norm=(vec(sd[f"{p}.mha.attn.Qnorm_act.0.weight"]), vec(sd[f"{p}.mha.attn.Qnorm_act.0.bias"])),
                    vconv=vec(sd[f"{p}.mha.attn.conv.weight"]),
                    norm1=(vec(sd[f"{p}.norm1.weight"]), vec(sd[f"{p}.norm1.bias"])),
                    norm2=(vec(sd[f"{p}.norm2.weight"]), vec(sd[f"{p}.norm2.bias"])),
                ))
                b += 1
            self.blocks.append(blocks)
        blocks4, b = [], 0
        while f"block4.{b}.attn.q.weight" in sd:
            p = f"block4.{b}"
            lin = lambda k: Layer(sd[f"{p}.{k}.weight"], sd[f"{p}.{k}.bias"], w8, vec)  # noqa: E731
            blocks4.append(dict(
                q=lin("attn.q"), kv=lin("attn.kv"), proj=lin("attn.proj"), fc1=lin("mlp.fc1"), fc2=lin("mlp.fc2"),
                norm1=(vec(sd[f"{p}.norm1.weight"]), vec(sd[f"{p}.norm1.bias"])),
                norm2=(vec(sd[f"{p}.norm2.weight"]), vec(sd[f"{p}.norm2.bias"])),
            ))
            b += 1
        self.blocks.append(blocks4)
        self.heads4 = stage4_heads
        self.norm = (vec(sd["norm.weight"]), vec(sd["norm.bias"]))
        self.head = Layer(sd["head.weight"], sd["head.bias"], w8, vec)
        self.probe = {}

    # -- storage in the token type
    def store(self, fmt, point, x):
        """x (tokens on the last axis) as the engine would read it back from E."""
        if self.stats is not None:
            q = to_i8(x)
            rms = x.pow(2).mean(-1).sqrt()
            crest = torch.where(rms > 0, x.abs().amax(-1) / rms, torch.zeros_like(rms))
            st = self.stats.setdefault(point, [0.0, 0.0, 0.0, 0, 0.0, x.shape[-1]])
            st[0] += float(x.double().pow(2).sum())
            st[1] += float((q - x).double().pow(2).sum())
            st[2] += float(crest.sum())
            st[3] += crest.numel()
            st[4] = max(st[4], float(crest.max()))
        return STORE[fmt](x)

    def smap(self, s, point, x):
        return self.store(self.v.maps[s], point, x)

    def saux(self, s, point, x):
        return self.store(self.v.aux[s], point, x)

    # -- layers
    def linear(self, x, layer):
        if not self.v.w8a8:
            return F.linear(x, layer.w, layer.b)
        q, s = quant_rows(x)
        acc = (q.double() @ layer.q.t()).to(x.dtype)
        y = acc * s * layer.s
        return y if layer.b is None else y + layer.b

    def conv(self, x, layer, stride, pad, relu=True):
        """[B, Ci, H, W] -> [B, Co, Ho, Wo]; W8A8 quantises each output pixel's taps."""
        if not self.v.w8a8:
            y = F.conv2d(x, layer.w, layer.b, stride, pad)
        else:
            k = layer.w.shape[-1]
            ho = (x.shape[2] + 2 * pad - k) // stride + 1
            wo = (x.shape[3] + 2 * pad - k) // stride + 1
            cols = F.unfold(x, k, padding=pad, stride=stride).transpose(1, 2)  # [B, L, Ci*k*k]
            y = self.linear(cols, layer)  # [B, L, Co]
            y = y.transpose(1, 2).reshape(x.shape[0], -1, ho, wo)
        return F.relu(y) if relu else y

    def aux_nchw(self, point, x):
        return self.saux(0, point, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    # -- blocks
    def soft_block(self, t, hw, p, s, name):
        b, n, c = t.shape
        h_, w_ = hw
        d, r = p["d"], p["r"]
        heads = c // d
        q = self.linear(t, p["q"])
        v = self.linear(t, p["v"])
        qh = q.reshape(b, n, heads, d).transpose(1, 2) / math.sqrt(math.sqrt(d))
        vh = v.reshape(b, n, heads, d).transpose(1, 2)
        img = qh.reshape(b * heads, h_, w_, d).permute(0, 3, 1, 2)
        lm = self.conv(img, p["lm"], r, 0, relu=False)
        lm = lm.flatten(2).transpose(1, 2).reshape(b, heads, -1, d)
        lm = F.gelu(layer_norm(lm, *p["lm_norm"], 1e-5))
        k1 = gaussian(qh, lm)
        k2 = gaussian(lm, lm)
        inv = newton_norm(k2, self.iters) if self.normalized else newton_plain(k2, self.iters)
        out = (k1 @ inv) @ (k1.transpose(-1, -2) @ vh)
        # The depthwise V-convolution reads V from the ring in the token type.
        vr = self.saux(s, f"ring{name}", v)
        ks = p["vconv"].shape[-1]
        planes = vr.reshape(b, h_, w_, heads, d).permute(0, 4, 3, 1, 2).reshape(b * d, heads, h_, w_)
        vc = F.conv2d(planes, p["vconv"], padding=ks // 2, groups=heads)
        out = out + vc.reshape(b, d, heads, h_, w_).flatten(3).permute(0, 2, 3, 1)
        a = out.transpose(1, 2).reshape(b, n, c)
        x = layer_norm(t + self.linear(a, p["ff"]), *p["norm1"], 1e-5)
        return layer_norm(x + self.linear(gelu_tanh(self.linear(x, p["ff1"])), p["ff2"]), *p["norm2"], 1e-5)

    def stage4_block(self, t, p, name):
        b, n, c = t.shape
        h = self.heads4
        d = c // h
        y = layer_norm(t, *p["norm1"], 1e-6)
        q = self.linear(y, p["q"])
        kv = self.linear(y, p["kv"])
        k = self.saux(3, f"keys{name}", kv[..., :c])  # stored in the token type
        v = self.saux(3, f"values{name}", kv[..., c:])
        split = lambda z: z.reshape(b, n, h, d).transpose(1, 2)  # noqa: E731
        att = ((split(q) @ split(k).transpose(-1, -2)) * d**-0.5).softmax(-1)
        o = (att @ split(v)).transpose(1, 2).reshape(b, n, c)
        x = t + self.linear(o, p["proj"])
        return x + self.linear(F.gelu(self.linear(layer_norm(x, *p["norm2"], 1e-6), p["fc1"])), p["fc2"])

    # -- whole model
    def __call__(self, img):
        x = self.conv(img.to(self.dtype), self.stem[0], 2, 1)
        x = self.aux_nchw("stem.conv1", x)  # line buffer
        x = self.conv(x, self.stem[1], 1, 1)
        x = self.aux_nchw("stem.conv2", x)  # line buffer
        x = self.conv(x, self.stem[2], 2, 1)
        b = x.shape[0]
        for s in range(4):
            if s > 0:
                x = self.conv(x, self.embed[s], 2, 1)
            hw = x.shape[2:]
            t = self.smap(s, "stem" if s == 0 else f"embed{s + 1}", x.flatten(2).transpose(1, 2))
            if s == 0:
                self.probe["stem"] = t
            if s < 3:
                t = self.smap(s, f"pos{s + 1}", t + resample(self.pos[s], *hw))
                for i, p in enumerate(self.blocks[s]):
                    name = f"{s + 1}.{i}"
                    t = self.smap(s, f"block{name}", self.soft_block(t, hw, p, s, name))
                self.probe[f"stage{s + 1}"] = t
                x = t.transpose(1, 2).reshape(b, -1, *hw)
            else:
                cls = (self.cls + self.pos[3][:, :1]).expand(b, -1, -1)
                t = self.smap(3, "pos4", torch.cat([cls, t + resample(self.pos[3][:, 1:], *hw)], 1))
                for i, p in enumerate(self.blocks[3]):
                    name = f"4.{i}"
                    t = self.smap(3, f"block{name}", self.stage4_block(t, p, name))
                self.probe["stage4"] = t
        t = self.smap(3, "final_norm", layer_norm(t, *self.norm, 1e-6))
        self.probe["final_norm"] = t
        return self.linear(t[:, 0], self.head).float()


# ---------------------------------------------------------------- metrics
def rel_err(logits, ref):
    """Per input max|logit - ref| / max|ref|, as `soft verify` measures it."""
    return ((logits - ref).abs().amax(-1) / ref.abs().amax(-1)).numpy()


def demo_inputs():
    images = torch.as_tensor(np.load(DIGITS / "test_images.npy"), dtype=torch.float32)
    labels = torch.as_tensor(np.load(DIGITS / "test_labels.npy")).long()
    x = images / 16.0
    x = x.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    x = (x - 0.5) / 0.5
    return x[:, None].repeat(1, 3, 1, 1).contiguous(), labels


def run_engine(soft, ckpt, dtype, inputs, extra, tmp):
    """The engine's f16-map logits for each input (one `soft run` per input)."""
    blob = tmp / f"{ckpt.parent.name}_{dtype}.soft"
    if not blob.exists():
        subprocess.run([soft, "convert", str(ckpt), "-o", str(blob), "--dtype", dtype, *extra],
                       check=True, capture_output=True)
    out = []
    for i, x in enumerate(inputs):
        xi, yi = tmp / "x.npy", tmp / "y.npy"
        np.save(xi, x[None].numpy().astype(np.float32))
        for f in (yi,):
            f.unlink(missing_ok=True)
        subprocess.run([soft, "run", str(blob), "--input-npy", str(xi), "--activations", "f16",
                        "--threads", "1", "--logits-out", str(yi)], check=True, capture_output=True)
        out.append(np.load(yi).reshape(-1))
    return torch.as_tensor(np.stack(out))


def margins(logits):
    """Top-1 minus top-2 logit, relative to max|logit|, per input."""
    top2 = logits.topk(2, -1).values
    return ((top2[:, 0] - top2[:, 1]) / logits.abs().amax(-1)).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--random", type=int, default=64, help="random inputs per golden model (default 64)")
    ap.add_argument("--engine", help="path of the `soft` binary: check f16 and w8a8+f16 against it")
    ap.add_argument("--engine-limit", type=int, default=360, help="demo images run through the engine")
    ap.add_argument("--noise", type=float, default=1.0,
                    help="sigma of the Gaussian noise of the noisy demo split (default 1.0)")
    ap.add_argument("--noise-draws", type=int, default=10, help="noisy copies of the split (default 10; 0: none)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    by_name = {v.name: v for v in VARIANTS}
    results = {"variants": [v.__dict__ for v in VARIANTS], "demo": {}, "noisy": {}, "points": {}, "golden": {},
               "checks": {}}

    # ---- demo
    sd = load_state(DIGITS / "soft_digits.pth")
    x, labels = demo_inputs()
    logits = {}
    for v in VARIANTS:
        sim = Sim(sd, v, DEMO_STAGE4_HEADS, False, 20)
        if v.name == "f32":
            sim.stats = {}
        logits[v.name] = sim(x)
        if v.name == "f32":
            for point, (x2, e2, crest, n, top, c) in sim.stats.items():
                results["points"][point] = {
                    "channels": c, "tokens": n // len(x), "i8_sqnr_db": 10 * math.log10(x2 / e2),
                    "crest_mean": crest / n, "crest_max": top,
                }
    base = logits["f32"]
    torch_ref = torch.as_tensor(np.load(DIGITS / "test_logits.npy"))
    results["checks"]["demo_f32_vs_pytorch_rel"] = float(rel_err(base, torch_ref).max())
    results["checks"]["demo_f32_min_margin_rel"] = float(margins(base).min())
    for name, y in logits.items():
        results["demo"][name] = {
            "accuracy": float((y.argmax(1) == labels).float().mean()),
            "agree_f32": float((y.argmax(1) == base.argmax(1)).float().mean()),
            "max_rel_vs_f32": float(rel_err(y, base).max()),
            "mean_rel_vs_f32": float(rel_err(y, base).mean()),
        }
    # The same variant with f64 arithmetic between the storage points: how far f32 rounding
    # alone moves it (through rounding decisions at the storage points that flip), and so
    # the floor of any simulation-vs-engine gap.
    for name in ["f32", "f16", "i8", "w8a8+f16"]:
        wide = Sim(sd, by_name[name], DEMO_STAGE4_HEADS, False, 20, torch.float64)(x)
        results["checks"][f"demo_{name}_f64_vs_f32_rel"] = float(rel_err(wide, logits[name]).max())

    # ---- the demo split with noise: low-margin inputs, so that flips can be counted
    if args.noise_draws:
        gen = torch.Generator().manual_seed(0)
        xn = torch.cat([x + args.noise * torch.randn(x.shape, generator=gen) for _ in range(args.noise_draws)])
        ln = labels.repeat(args.noise_draws)
        noisy = {v.name: Sim(sd, v, DEMO_STAGE4_HEADS, False, 20)(xn) for v in VARIANTS}
        nbase = noisy["f32"]
        for name, y in noisy.items():
            r = rel_err(y, nbase)
            results["noisy"][name] = {
                "inputs": len(xn),
                "accuracy": float((y.argmax(1) == ln).float().mean()),
                "agree_f32": float((y.argmax(1) == nbase.argmax(1)).float().mean()),
                "flips": int((y.argmax(1) != nbase.argmax(1)).sum()),
                "max_rel_vs_f32": float(r.max()),
                "p99_rel_vs_f32": float(np.quantile(r, 0.99)),
                "mean_rel_vs_f32": float(r.mean()),
            }

    # ---- golden cases
    for case in CASES:
        d = GOLDEN / case
        meta = json.loads((d / "meta.json").read_text())["config"]
        sd = load_state(d / "ckpt.pth")
        make = lambda v: Sim(sd, v, meta["num_heads"][3], meta["normalized_attention"], meta["newton_maxiter"])  # noqa: E731
        inp = torch.as_tensor(np.load(d / "input.npy"))
        ref = torch.as_tensor(np.load(d / "logits.npy"))
        rnd = torch.randn(args.random, *inp.shape[1:])
        per = {}
        rnd_base = None
        for v in VARIANTS:
            sim = make(v)
            y = sim(inp)
            if v.name == "f32":
                stages = {}
                for k in ["stem", "stage1", "stage2", "stage3", "stage4", "final_norm"]:
                    want = torch.as_tensor(np.load(d / f"{k}.npy")).reshape(sim.probe[k].shape)
                    stages[k] = float((sim.probe[k] - want).abs().max() / want.abs().max())
                stages["logits"] = float(rel_err(y, ref).max())
                results["checks"][f"{case}_f32_vs_reference_rel"] = stages
                results["checks"][f"{case}_reference_margin_rel"] = float(margins(ref)[0])
            entry = {
                "top1_ref": int(ref.argmax()),
                "top1": int(y.argmax()),
                "top1_match": bool(y.argmax() == ref.argmax()),
                "rel_vs_ref": float(rel_err(y, ref).max()),
            }
            if args.random:
                yr = sim(rnd)
                if v.name == "f32":
                    rnd_base = yr
                    results["checks"][f"{case}_random_min_margin_rel"] = float(margins(yr).min())
                entry["random_agree_f32"] = float((yr.argmax(1) == rnd_base.argmax(1)).float().mean())
                entry["random_max_rel_vs_f32"] = float(rel_err(yr, rnd_base).max())
            per[v.name] = entry
        results["golden"][case] = per

    # ---- the engine itself
    if args.engine:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            xs = x[: args.engine_limit]
            for dtype, vname in [("f32", "f16"), ("w8a8", "w8a8+f16")]:
                eng = run_engine(args.engine, DIGITS / "soft_digits.pth", dtype, xs,
                                 ["--stage4-heads", str(DEMO_STAGE4_HEADS)], tmp)
                sim = logits[vname][: len(xs)]
                results["checks"][f"demo_{vname}_sim_vs_engine"] = {
                    "weights": dtype,
                    "images": len(xs),
                    "max_rel": float(rel_err(sim, eng).max()),
                    "top1_agree": float((sim.argmax(1) == eng.argmax(1)).float().mean()),
                    "engine_max_rel_vs_f32": float(rel_err(eng, base[: len(xs)]).max()),
                    "sim_max_rel_vs_f32": float(rel_err(sim, base[: len(xs)]).max()),
                }
            for case in CASES:
                d = GOLDEN / case
                meta = json.loads((d / "meta.json").read_text())["config"]
                extra = ["--norm"] if meta["normalized_attention"] else []
                inp = torch.as_tensor(np.load(d / "input.npy"))
                sd = load_state(d / "ckpt.pth")
                for dtype, vname in [("f32", "f16"), ("w8a8", "w8a8+f16")]:
                    eng = run_engine(args.engine, d / "ckpt.pth", dtype, inp, extra, tmp)
                    make = lambda t: Sim(sd, by_name[vname], meta["num_heads"][3],  # noqa: E731
                                         meta["normalized_attention"], meta["newton_maxiter"], t)
                    sim = make(torch.float32)(inp)
                    results["checks"][f"{case}_{vname}_sim_vs_engine_rel"] = float(rel_err(sim, eng).max())
                    results["checks"][f"{case}_{vname}_f64_vs_f32_rel"] = float(
                        rel_err(make(torch.float64)(inp), sim).max())

    # ---- report
    print("demo: 360 test digits (f32 weights unless W8A8); rel = max|logit - f32 logit| / max|f32 logit|")
    print(f"{'variant':13} {'accuracy':>9} {'top-1 = f32':>12} {'worst rel':>10} {'mean rel':>10}")
    for name, r in results["demo"].items():
        print(f"{name:13} {100 * r['accuracy']:8.2f}% {100 * r['agree_f32']:11.2f}% "
              f"{r['max_rel_vs_f32']:10.2e} {r['mean_rel_vs_f32']:10.2e}")
    if results["noisy"]:
        print(f"\nnoisy demo: the split + N(0, {args.noise}^2) noise, {args.noise_draws} draws "
              f"({results['noisy']['f32']['inputs']} inputs)")
        print(f"{'variant':13} {'accuracy':>9} {'top-1 = f32':>12} {'flips':>6} {'worst rel':>10} "
              f"{'p99 rel':>10} {'mean rel':>10}")
        for name, r in results["noisy"].items():
            print(f"{name:13} {100 * r['accuracy']:8.2f}% {100 * r['agree_f32']:11.2f}% {r['flips']:6} "
                  f"{r['max_rel_vs_f32']:10.2e} {r['p99_rel_vs_f32']:10.2e} {r['mean_rel_vs_f32']:10.2e}")
    print("\ndemo, each storage point on the f32 run: what per-token int8 would do there")
    print(f"{'point':14} {'tokens x C':>11} {'i8 SQNR dB':>11} {'crest mean':>11} {'crest max':>10}")
    for point, r in results["points"].items():
        print(f"{point:14} {r['tokens']:>6} x {r['channels']:<3} {r['i8_sqnr_db']:11.1f} "
              f"{r['crest_mean']:11.2f} {r['crest_max']:10.2f}")
    for case, per in results["golden"].items():
        print(f"\n{case}: reference top-1 {per['f32']['top1_ref']}; rel vs ref = max|logit - ref| / max|ref|; "
              f"{args.random} random inputs against the f32 variant")
        print(f"{'variant':13} {'top-1':>6} {'rel vs ref':>11} {'rand agree':>11} {'rand worst':>11}")
        for name, r in per.items():
            ok = "ok" if r["top1_match"] else f"{r['top1']}!"
            ra = f"{100 * r['random_agree_f32']:10.1f}%" if args.random else ""
            rw = f"{r['random_max_rel_vs_f32']:11.2e}" if args.random else ""
            print(f"{name:13} {ok:>6} {r['rel_vs_ref']:11.2e} {ra:>11} {rw}")
    print("\nchecks")
    for k, v in results["checks"].items():
        print(f"  {k}: {json.dumps(v)}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
