#!/usr/bin/env python3
"""An exact float64 Qwen2 forward pass in numpy, to tell which side of a
golden comparison is off.

  python3 qwen2_numpy.py tests/data/golden/<case> LOOM_LOGITS.f32

prints NMSE of numpy vs the transformers logits.f32, of loom vs numpy, and of
loom vs transformers. Dense checkpoints only (needs numpy, safetensors,
ml_dtypes for bf16).
"""
import json
import sys

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np
from safetensors.numpy import load_file

d = sys.argv[1]
cfg = json.load(open(d + '/config.json'))
W = {k: v.astype(np.float64) for k, v in load_file(d + '/model.safetensors').items()}
toks = [int(t) for t in open(d + '/tokens.txt').read().split(',')]
H, Hkv = cfg['num_attention_heads'], cfg['num_key_value_heads']; D = cfg['hidden_size']; hd = D // H
eps = cfg['rms_norm_eps']; theta = (cfg.get('rope_parameters') or {}).get('rope_theta', cfg.get('rope_theta', 10000.0))
T = len(toks)
def rms(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
ang = np.arange(T)[:, None] * inv[None, :]
cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
def rope(x):  # [T, h, hd]
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
    return x * cos[:, None] + np.concatenate([-x2, x1], -1) * sin[:, None]
x = W['model.embed_tokens.weight'][toks]
for l in range(cfg['num_hidden_layers']):
    p = f'model.layers.{l}.'
    h = rms(x, W[p + 'input_layernorm.weight'])
    q = h @ W[p + 'self_attn.q_proj.weight'].T + W[p + 'self_attn.q_proj.bias']
    k = h @ W[p + 'self_attn.k_proj.weight'].T + W[p + 'self_attn.k_proj.bias']
    v = h @ W[p + 'self_attn.v_proj.weight'].T + W[p + 'self_attn.v_proj.bias']
    q, k, v = rope(q.reshape(T, H, hd)), rope(k.reshape(T, Hkv, hd)), v.reshape(T, Hkv, hd)
    out = np.zeros((T, H, hd))
    for hh in range(H):
        kh = hh // (H // Hkv)
        s = q[:, hh] @ k[:, kh].T / np.sqrt(hd)
        s = s + np.triu(np.full((T, T), -np.inf), 1)
        s = np.exp(s - s.max(1, keepdims=True)); s /= s.sum(1, keepdims=True)
        out[:, hh] = s @ v[:, kh]
    x = x + out.reshape(T, D) @ W[p + 'self_attn.o_proj.weight'].T
    h = rms(x, W[p + 'post_attention_layernorm.weight'])
    g = h @ W[p + 'mlp.gate_proj.weight'].T; u = h @ W[p + 'mlp.up_proj.weight'].T
    x = x + (g / (1 + np.exp(-g)) * u) @ W[p + 'mlp.down_proj.weight'].T
x = rms(x, W['model.norm.weight'])
head = W['lm_head.weight'] if 'lm_head.weight' in W else W['model.embed_tokens.weight']
logits = x @ head.T
ref = np.fromfile(d + '/logits.f32', dtype=np.float32).reshape(T, -1)
ours = np.fromfile(sys.argv[2], dtype=np.float32).reshape(T, -1)
n = lambda a, b: ((a - b) ** 2).sum() / (b ** 2).sum()
print('numpy vs HF %.3e   loom vs numpy %.3e   loom vs HF %.3e' % (n(logits, ref), n(ours, logits), n(ours, ref)))
