"""Builds tiny random models as real Hugging Face folders: config.json, safetensors,
tokenizer.json (trained with `tokenizers` on a small corpus) and a chat template.

No download: every test that needs a model makes one here in a few hundred milliseconds.
"""

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Folio keeps the KV cache in int4 and computes attention on it directly.",
    "def main():\n    print('hello, world')\n    return 0\n",
    "Long documents, page by page: résumé, naïve café, 東京, Ω, emoji 🙂.",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9",
] * 20

ARCHS = {
    "llama": dict(
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        hidden_size=256,
        num_hidden_layers=2,
        intermediate_size=512,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
    "qwen3": dict(
        model_type="qwen3",
        architectures=["Qwen3ForCausalLM"],
        hidden_size=256,
        num_hidden_layers=2,
        intermediate_size=512,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    ),
    "gemma3_text": dict(
        model_type="gemma3_text",
        architectures=["Gemma3ForCausalLM"],
        hidden_size=256,
        num_hidden_layers=3,
        intermediate_size=512,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=128,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        query_pre_attn_scalar=1,
        sliding_window=32,
        sliding_window_pattern=3,
        max_position_embeddings=4096,
    ),
}


def _tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def make_model(folder, arch: str = "llama", vocab_size: int = 512, seed: int = 0, **overrides) -> Path:
    """Write a random `arch` model into `folder` and return its path."""
    from mlx_lm.utils import _get_classes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(vocab_size)
    tok.save(str(folder / "tokenizer.json"))
    eos = tok.token_to_id("<|end|>")
    config = dict(ARCHS[arch], vocab_size=tok.get_vocab_size(), eos_token_id=eos, bos_token_id=tok.token_to_id("<|bos|>"))
    config.update(overrides)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|bos|>",
                # An eos_token_id override outside the vocabulary makes a model that never ends:
                # then the tokenizer must not name one either (mlx-lm stops on both).
                "eos_token": "<|end|>" if config["eos_token_id"] == eos else None,
                "pad_token": "<|pad|>",
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": config["max_position_embeddings"],
            }
        )
    )
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    return folder
