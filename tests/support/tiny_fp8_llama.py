"""A tiny random Llama checkpoint in compressed-tensors FP8_DYNAMIC form, built in a directory.

Every Linear has an fp8 (e4m3fn) weight with per-output-channel fp32 scales and dynamic per-token
activation scales: the configuration vLLM serves with ``FP8ScaledMMLinearKernel`` classes. The
embedding, norms and ``lm_head`` stay bf16 (``ignore: ["lm_head"]``, as real FP8_DYNAMIC
checkpoints do). The tokenizer is a word-level ``tokenizers`` model saved locally: nothing is
fetched from a model hub.

Shapes (hidden 128, 2 heads of 64, intermediate 256) give every GEMM N % 16 == 0 and K % 32 == 0.
The lm_head is scaled so that logits are far apart (std ~ 10): greedy decoding then depends on
the model, not on last-bit rounding differences between two correct FP8 kernels.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HIDDEN = 128
INTERMEDIATE = 256
LAYERS = 2
HEADS = 2
HEAD_DIM = 64
WORDS = [f"w{i}" for i in range(200)]
SPECIAL = ["<unk>", "<s>", "</s>"]
VOCAB = 256  # >= len(SPECIAL) + len(WORDS); the rows past the tokenizer's vocabulary are padding
FP8_MAX = torch.finfo(torch.float8_e4m3fn).max


def _quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (w / scale).to(torch.float8_e4m3fn), scale.to(torch.float32)


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(path))


def build(path: str | Path, seed: int = 0) -> Path:
    """Write config.json, model.safetensors and the tokenizer into ``path``; return it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std):
        return torch.randn(*shape, generator=g) * std

    tensors: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": randn(VOCAB, HIDDEN, std=1.0).to(torch.bfloat16),
        "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
        "lm_head.weight": randn(VOCAB, HIDDEN, std=1.0).to(torch.bfloat16),
    }
    linears = {
        "self_attn.q_proj": (HEADS * HEAD_DIM, HIDDEN),
        "self_attn.k_proj": (HEADS * HEAD_DIM, HIDDEN),
        "self_attn.v_proj": (HEADS * HEAD_DIM, HIDDEN),
        "self_attn.o_proj": (HIDDEN, HEADS * HEAD_DIM),
        "mlp.gate_proj": (INTERMEDIATE, HIDDEN),
        "mlp.up_proj": (INTERMEDIATE, HIDDEN),
        "mlp.down_proj": (HIDDEN, INTERMEDIATE),
    }
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.input_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
        for name, (n, k) in linears.items():
            # std 1/sqrt(K) keeps activations O(1) through the residual stream.
            w_q, scale = _quantize_per_channel(randn(n, k, std=k**-0.5))
            tensors[f"{prefix}.{name}.weight"] = w_q
            tensors[f"{prefix}.{name}.weight_scale"] = scale
    save_file(tensors, str(path / "model.safetensors"))

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": VOCAB,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "format": "float-quantized",
            "quantization_status": "compressed",
            "ignore": ["lm_head"],
            "config_groups": {
                "group_0": {
                    "targets": ["Linear"],
                    "weights": {
                        "num_bits": 8, "type": "float", "strategy": "channel",
                        "symmetric": True, "dynamic": False,
                    },
                    "input_activations": {
                        "num_bits": 8, "type": "float", "strategy": "token",
                        "symmetric": True, "dynamic": True,
                    },
                }
            },
        },
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    _tokenizer(path)
    return path
