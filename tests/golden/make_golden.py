#!/usr/bin/env python3
"""Make the golden Qwen2 checkpoints and their float64 logits with Hugging Face
transformers (run where torch + transformers are installed: the GPU machine).

For each case: transformers builds a small random Qwen2ForCausalLM, saves it
with save_pretrained (safetensors, in the case's dtype), then runs it in
float64 on a fixed token sequence and writes the logits. The AWQ case packs
the linear layers into the published AWQ GEMM layout (qweight/qzeros/scales,
group 128, zero points) and computes its logits from the dequantised weights,
so the reference is exactly the checkpoint's own function.

  python3 make_golden.py OUTDIR
writes OUTDIR/<case>/{config.json, model.safetensors, tokens.txt, logits.f32}
(logits.f32: float32 little-endian [n_tokens][vocab]).
"""
import json
import os
import sys
import zlib

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i holds column 8c + AWQ_ORDER[i]
GROUP = 128

CASES = [
    # name, dtype, tied, hidden, heads, kv heads, ffn, layers, vocab, tokens, extra config
    ("bf16-tied-gqa4", torch.bfloat16, True, 128, 8, 2, 256, 2, 512, 300, {}),
    ("f16-untied-gqa7-yarn", torch.float16, False, 112, 14, 2, 224, 2, 384, 64,
     # max_position_embeddings = factor x original: every transformers version then agrees on the factor
     {"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
      "max_position_embeddings": 128}),
    ("f32-untied-gqa4", torch.float32, False, 64, 4, 1, 96, 2, 256, 40, {}),
    ("awq-untied-gqa4", torch.float16, False, 256, 8, 2, 384, 2, 512, 48, {}),
]


def pack_rows(vals):
    """[rows, N] ints 0..15 -> [rows, N/8] int32 in AWQ nibble order."""
    rows, n = vals.shape
    v = vals.reshape(rows, n // 8, 8).astype(np.uint32)
    w = np.zeros((rows, n // 8), dtype=np.uint32)
    for i, col in enumerate(AWQ_ORDER):
        w |= v[:, :, col] << np.uint32(4 * i)
    return w.view(np.int32)


def awq_quantise(weight):
    """nn.Linear weight [N, K] -> (qweight, qzeros, scales, dequantised [N, K])."""
    w = weight.detach().to(torch.float64).cpu().numpy().T  # [K, N]
    k, n = w.shape
    g = w.reshape(k // GROUP, GROUP, n)
    wmin, wmax = g.min(axis=1), g.max(axis=1)
    scales = np.maximum((wmax - wmin) / 15.0, 1e-6).astype(np.float16)
    s = scales.astype(np.float64)
    zeros = np.clip(np.round(-wmin / s), 0, 15)
    q = np.clip(np.round(g / s[:, None, :]) + zeros[:, None, :], 0, 15)
    deq = ((q - zeros[:, None, :]) * s[:, None, :]).reshape(k, n)
    return (pack_rows(q.reshape(k, n).astype(np.int64)), pack_rows(zeros.astype(np.int64)), scales,
            torch.from_numpy(deq.T.copy()))


def make_case(outdir, name, dtype, tied, hidden, heads, kv, ffn, layers, vocab, n_tokens, extra):
    torch.manual_seed(zlib.crc32(name.encode()))
    kwargs = dict(max_position_embeddings=1024, rope_theta=10000.0)
    kwargs.update(extra)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, rms_norm_eps=1e-6,
                      tie_word_embeddings=tied, use_sliding_window=False, **kwargs)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # random init is tiny (std 0.02); widen so every op matters
        for pname, p in model.named_parameters():
            if p.dim() == 1 and "norm" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    path = os.path.join(outdir, name)
    os.makedirs(path, exist_ok=True)
    awq = name.startswith("awq")
    if awq:
        tensors = {}
        with torch.no_grad():
            for pname, p in model.named_parameters():
                mod = pname.rsplit(".", 1)[0]
                is_linear = any(x in mod for x in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
                if is_linear and pname.endswith(".weight"):
                    qw, qz, sc, deq = awq_quantise(p)
                    tensors[mod + ".qweight"] = torch.from_numpy(np.ascontiguousarray(qw))
                    tensors[mod + ".qzeros"] = torch.from_numpy(np.ascontiguousarray(qz))
                    tensors[mod + ".scales"] = torch.from_numpy(np.ascontiguousarray(sc))
                    p.copy_(deq.to(p.dtype))
                else:
                    p.copy_(p.to(dtype).to(torch.float32))  # what the checkpoint stores
                    tensors[pname] = p.detach().to(dtype).contiguous()
        save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        conf = cfg.to_dict()
        conf["torch_dtype"] = "float16"
        conf["quantization_config"] = {"bits": 4, "group_size": GROUP, "quant_method": "awq", "version": "gemm",
                                       "zero_point": True}
        conf["architectures"] = ["Qwen2ForCausalLM"]
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(conf, f, indent=2)
        ref = model.to(torch.float64)
    else:
        model = model.to(dtype)
        model.save_pretrained(path, safe_serialization=True)
        ref = model.to(torch.float64)
    gen = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, vocab, (n_tokens,), generator=gen)
    with torch.no_grad():
        logits = ref(tokens[None, :]).logits[0]
    np.asarray(logits.cpu().numpy(), dtype="<f4").tofile(os.path.join(path, "logits.f32"))
    with open(os.path.join(path, "tokens.txt"), "w") as f:
        f.write(",".join(str(int(t)) for t in tokens) + "\n")
    top2 = torch.topk(logits, 2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    print(f"{name}: {n_tokens} tokens, vocab {vocab}, logits std {logits.std().item():.3f}, min top-2 margin {margin:.4f}")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "golden"
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for case in CASES:
        make_case(outdir, *case)


if __name__ == "__main__":
    main()
