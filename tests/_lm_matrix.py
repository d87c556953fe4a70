"""Real architectures and real tokenizer shapes, built locally from configs (no hub).

Five tokenizer shapes as the hub ships them — byte-level BPE trained here on HH-RLHF text
(or a built-in corpus when the slice is absent), with each family's special tokens,
BOS/EOS/pad conventions and chat template:

* ``gpt2``: ``<|endoftext|>`` is BOS, EOS and UNK; no pad; no template; nothing added.
* ``llama``: ``<s>`` added in front, ``</s>`` EOS, no pad; Llama-2's ``[INST]`` template.
* ``qwen``: no BOS; EOS ``<|endoftext|>`` (the base model's), ChatML template whose turns
  end in ``<|im_end|>``; ``generation_config.eos_token_id = [<|im_end|>, <|endoftext|>]``.
* ``gemma``: ``<bos>`` added, ``<eos>``, ``<pad>``; Gemma's turn template
  (``<start_of_turn>`` / ``<end_of_turn>``); ``generation_config`` stops on both.
* ``opt``: ``</s>`` added in front and used as EOS; ``<pad>``; no template.

Eight architectures (random tiny weights, 2 layers): GPT-2 (dropout 0.1, as it ships),
Llama, Qwen2, GPT-NeoX (vocabulary padded to a multiple of 64), Mistral (sliding
window), Gemma 2 (sliding window, logit soft-capping), Phi-3, OPT-350m-shaped
(``word_embed_proj_dim`` != hidden, post-norm, dropout 0.1).
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

import torch

from tests.conftest import HH_DIR

LLAMA2 = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'].strip() "
    "+ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' "
    "+ eos_token }}{% endif %}{% endfor %}"
)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

SHAPES = {
    "gpt2": {"specials": ["<|endoftext|>"], "bos": "<|endoftext|>", "eos": "<|endoftext|>",
             "unk": "<|endoftext|>", "pad": None, "add_bos": False, "template": None,
             "gen_eos": None},
    "llama": {"specials": ["<unk>", "<s>", "</s>"], "bos": "<s>", "eos": "</s>", "unk": "<unk>",
              "pad": None, "add_bos": True, "template": LLAMA2, "gen_eos": None},
    "qwen": {"specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "bos": None,
             "eos": "<|endoftext|>", "unk": None, "pad": "<|endoftext|>", "add_bos": False,
             "template": CHATML, "gen_eos": ["<|im_end|>", "<|endoftext|>"]},
    "gemma": {"specials": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
              "bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>", "add_bos": True,
              "template": GEMMA, "gen_eos": ["<eos>", "<end_of_turn>"]},
    "opt": {"specials": ["<pad>", "</s>", "<unk>"], "bos": "</s>", "eos": "</s>", "unk": "<unk>",
            "pad": "<pad>", "add_bos": True, "template": None, "gen_eos": None},
}

# architecture -> the tokenizer shape it ships with (or a close one)
MATRIX = {"gpt2": "gpt2", "llama": "llama", "qwen2": "qwen", "gpt_neox": "gpt2",
          "mistral": "llama", "gemma2": "gemma", "phi3": "qwen", "opt": "opt"}
SLIDING = {"mistral", "gemma2"}  # KV caches with sliding-window layers

_FALLBACK = [
    "\n\nHuman: How do I bake bread at home?\n\nAssistant: Mix flour, water, yeast and salt, "
    "knead it, let it rise, then bake it hot.",
    "\n\nHuman: What is the capital of France?\n\nAssistant: Paris is the capital of France.",
    "\n\nHuman: Can you help me write a poem?\n\nAssistant: Of course. What should it be about?",
] * 30


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[str, ...]:
    """HH-RLHF dialogues (the first 400 rows of the slice), or a built-in corpus."""
    f = Path(HH_DIR) / "harmless-base" / "test.jsonl.gz"
    if not f.is_file():
        return tuple(_FALLBACK)
    out = []
    with gzip.open(f, "rt") as fh:
        for i, line in enumerate(fh):
            if i >= 400:
                break
            row = json.loads(line)
            out += [row["chosen"], row["rejected"]]
    return tuple(out)


@functools.cache
def tokenizer(shape: str, vocab: int = 384):
    """A PreTrainedTokenizerFast of ``shape`` (cached per session)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    s = SHAPES[shape]
    raw = Tokenizer(models.BPE(unk_token=s["unk"]) if s["unk"] else models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=s["specials"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    raw.train_from_iterator(corpus(), trainer)
    if s["add_bos"]:
        bos_id = raw.token_to_id(s["bos"])
        raw.post_processor = processors.TemplateProcessing(
            single=f"{s['bos']} $A", pair=f"{s['bos']} $A {s['bos']} $B",
            special_tokens=[(s["bos"], bos_id)])
    kw = {k: s[k] for k in ("bos", "eos", "unk", "pad") if s[k]}
    tok = PreTrainedTokenizerFast(tokenizer_object=raw,
                                  **{f"{k}_token": v for k, v in kw.items()})
    if s["template"]:
        tok.chat_template = s["template"]
    return tok


def build_model(arch: str, seed: int = 0):
    """A tiny random ``...ForCausalLM`` of ``arch`` over its shape's tokenizer."""
    import transformers as tf

    tok = tokenizer(MATRIX[arch])
    v = len(tok)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 256}
    if arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=v, n_positions=256, n_embd=32, n_layer=2, n_head=4, **ids)
        cls = tf.GPT2LMHeadModel
    elif arch == "llama":
        cfg, cls = tf.LlamaConfig(vocab_size=v, num_key_value_heads=2, **small, **ids), \
            tf.LlamaForCausalLM
    elif arch == "qwen2":
        cfg, cls = tf.Qwen2Config(vocab_size=v, num_key_value_heads=2, **small, **ids), \
            tf.Qwen2ForCausalLM
    elif arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(vocab_size=-(-v // 64) * 64, rotary_pct=0.25,
                               hidden_dropout=0.1, attention_dropout=0.1, **small, **ids)
        cls = tf.GPTNeoXForCausalLM
    elif arch == "mistral":
        cfg = tf.MistralConfig(vocab_size=v, num_key_value_heads=2, sliding_window=16, **small,
                               **ids)
        cls = tf.MistralForCausalLM
    elif arch == "gemma2":
        cfg = tf.Gemma2Config(vocab_size=v, num_key_value_heads=2, head_dim=8, sliding_window=16,
                              **small, **ids)
        cls = tf.Gemma2ForCausalLM
    elif arch == "phi3":
        cfg = tf.Phi3Config(vocab_size=v, num_key_value_heads=4, resid_pdrop=0.1,
                            attention_dropout=0.1, **small, **ids)
        cls = tf.Phi3ForCausalLM
    elif arch == "opt":
        cfg = tf.OPTConfig(vocab_size=v, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=256,
                           word_embed_proj_dim=16, do_layer_norm_before=False, dropout=0.1,
                           attention_dropout=0.1, **ids)
        cls = tf.OPTForCausalLM
    else:
        raise ValueError(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    gen_eos = SHAPES[MATRIX[arch]]["gen_eos"]
    if gen_eos:
        model.generation_config.eos_token_id = [tok.convert_tokens_to_ids(t) for t in gen_eos]
    model.generation_config.pad_token_id = ids["pad_token_id"]
    return model, tok


def policy(arch: str, **kwargs):
    """A :class:`CausalLMPolicy` over :func:`build_model` (pi0-sized: tiny)."""
    from rlhf_env.policies import CausalLMPolicy

    model, tok = build_model(arch)
    kwargs.setdefault("max_new_tokens", 6)
    return CausalLMPolicy(model, tok, max_length=256, **kwargs)


def hh_prompts(n: int = 8, max_chars: int = 600) -> list[str]:
    """Distinct HH-style dialogue prompts (up to the last ``\\n\\nAssistant:``)."""
    out = []
    for text in corpus():
        cut = text.rfind("\n\nAssistant:")
        p = text[: cut + len("\n\nAssistant:")]
        if 0 < len(p) < max_chars and p not in out:
            out.append(p)
        if len(out) == n:
            break
    return out
