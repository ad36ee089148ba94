"""Tiny random Llama / Qwen2 checkpoints with real tokenizers, built locally (nothing comes from the hub).

Every format the PRMs and policies read is present: digits, "+", "-", the Math-Shepherd step tag "ки", Qwen's
"<extra_0>", the Llama 3 header/turn tokens and Qwen's <|im_start|>/<|im_end|>. The models are random, so what they
generate is garbage; the point is to exercise tokenization, chat templates, batching, sampling and score read-out
exactly as with the real checkpoints. head_dim is 32 so the vLLM CPU attention backend accepts them.

    dirs = build_all(tmp_dir)   # {"llama": ..., "qwen": ..., "math_shepherd": ..., "qwen_prm": ..., "skywork": ...}
"""

from __future__ import annotations

from pathlib import Path

LLAMA_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
MISTRAL_SPECIAL = ["<s>", "</s>", "<unk>"]
# added as normal (non-special) single tokens, like the real vocabularies where they are one piece
ADDED_WORDS = ["ки"]

# a Qwen2.5-style chat template (no BOS; contents verbatim)
QWEN_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_CORPUS = [
    "Solve the following math problem efficiently and clearly.",
    "## Step 1: Compute the sum of 12 and 30.\n\n12 + 30 = 42.\n\n",
    "## Step 2: Subtract 7 from 42, so 42 - 7 = 35.\n\n",
    "Therefore, the final answer is: $\\boxed{35}$. I hope it is correct.",
    "Step 1: Let x = 3 + 4 ки\nStep 2: Then x - 2 = 5 ки\n",
    "What is 1+2? The answer is 3. + - * / = ( ) [ ] { } ^ _ \\frac{1}{2} \\sqrt{9}",
    "0 1 2 3 4 5 6 7 8 9 10 11 100 1000 0.5 -1 +1 x y z a b c n m k",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "The problem asks for the value of the expression. We find that the result is 7.",
]


def build_tokenizer_object(vocab_size: int = 600):
    """A byte-level BPE trained on a small math corpus, with every special token the formats need."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = LLAMA_SPECIAL + QWEN_SPECIAL + MISTRAL_SPECIAL
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tok.add_tokens(ADDED_WORDS)
    return tok


def _wrap(tok, **kwargs):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def llama_tokenizer(chat_template: str | None = None):
    """Llama 3 style: BOS <|begin_of_text|> added by encode, <|eot_id|> ends a turn (EOS)."""
    from tokenizers import processors

    tok = build_tokenizer_object()
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B", special_tokens=[("<|begin_of_text|>", bos)]
    )
    if chat_template is None:
        from tts.backends.chat_templates import load_chat_template

        chat_template = load_chat_template("llama3")
    return _wrap(
        tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>",
        chat_template=chat_template,
    )


def qwen_tokenizer():
    """Qwen2.5 style: no BOS, <|im_end|> ends a turn, <|endoftext|> pads; <extra_0> is the PRM step separator."""
    tok = build_tokenizer_object()
    return _wrap(
        tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=["<extra_0>"],
        chat_template=QWEN_TEMPLATE,
    )


def mistral_tokenizer():
    """Math-Shepherd (Mistral) style: BOS <s> added by encode, no chat template."""
    from tokenizers import processors

    tok = build_tokenizer_object()
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    return _wrap(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")


def _shape(vocab_size: int, **overrides) -> dict:
    shape = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=False,
    )
    shape.update(overrides)
    return shape


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def save_llama_causal_lm(path: Path, tokenizer=None, seed: int = 0) -> Path:
    """A tiny random Llama causal LM (policy, or RLHFlow-style PRM) with the Llama 3 tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or llama_tokenizer()
    _seed(seed)
    config = LlamaConfig(
        **_shape(len(tokenizer)), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def save_stepping_llama(path: Path, strength: float = 2.5, seed: int = 0) -> Path:
    """A tiny random Llama policy that ends a step ("\\n\\n") every few dozen tokens at temperature 0.8 (strength 2.5:
    ~3% per token; 4: ~9%), so that a step-level search has steps to take: the separator's LM-head row reads one
    hidden dimension (the other weights stay random). A plain random model would almost never end a step."""
    import torch

    tokenizer = llama_tokenizer()
    separator = tokenizer.convert_tokens_to_ids("ĊĊ")  # byte-level BPE's "\n\n"
    assert tokenizer.decode([separator]) == "\n\n"
    save_llama_causal_lm(path, tokenizer=tokenizer, seed=seed)
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight[separator] = 0.0
        model.lm_head.weight[separator, 0] = strength
    model.save_pretrained(path)
    return Path(path)


def save_mistral_style_lm(path: Path, seed: int = 1) -> Path:
    """Math-Shepherd stand-in: a Llama-architecture causal LM with a Mistral-like tokenizer (BOS <s>, no template)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = mistral_tokenizer()
    _seed(seed)
    config = LlamaConfig(**_shape(len(tokenizer)), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def save_qwen_causal_lm(path: Path, seed: int = 2) -> Path:
    """A tiny random Qwen2 causal LM (policy) with the Qwen tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = qwen_tokenizer()
    _seed(seed)
    config = Qwen2Config(**_shape(len(tokenizer)), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def save_qwen_prm(path: Path, seed: int = 3) -> Path:
    """Qwen2.5-Math-PRM stand-in: Qwen2 backbone with a 2-class per-token head (AutoModelForTokenClassification)."""
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    tokenizer = qwen_tokenizer()
    _seed(seed)
    config = Qwen2Config(**_shape(len(tokenizer)), num_labels=2, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    Qwen2ForTokenClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def save_qwen_prm_native(path: Path, seed: int = 6) -> Path:
    """Qwen2.5-Math-PRM layout: architectures=[Qwen2ForProcessRewardModel], backbone `model.*` and the reward head
    `score.0` (hidden -> hidden), ReLU, `score.2` (hidden -> 2), as vLLM's built-in implementation loads it."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = qwen_tokenizer()
    _seed(seed)
    config = Qwen2Config(**_shape(len(tokenizer)), num_labels=2, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    state = {k: v.contiguous() for k, v in Qwen2ForCausalLM(config).state_dict().items()
             if not k.startswith("lm_head")}
    hidden = config.hidden_size
    state.update({
        "score.0.weight": torch.randn(hidden, hidden) * hidden**-0.5, "score.0.bias": torch.zeros(hidden),
        "score.2.weight": torch.randn(2, hidden) * hidden**-0.5, "score.2.bias": torch.zeros(2),
    })
    Path(path).mkdir(parents=True, exist_ok=True)
    config.architectures = ["Qwen2ForProcessRewardModel"]
    config.save_pretrained(path)
    save_file(state, str(Path(path) / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(path)
    return Path(path)


def save_skywork_prm(path: Path, seed: int = 4) -> Path:
    """Skywork-o1-Open-PRM stand-in: Qwen2 causal LM checkpoint plus a value head `v_head.summary` (hidden -> 1)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = qwen_tokenizer()
    tokenizer.bos_token = "<|endoftext|>"
    _seed(seed)
    config = Qwen2Config(**_shape(len(tokenizer)), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(path)
    head = {"v_head.summary.weight": torch.randn(1, config.hidden_size) * 0.5, "v_head.summary.bias": torch.zeros(1)}
    save_file(head, str(Path(path) / "value_head.safetensors"))
    tokenizer.save_pretrained(path)
    return Path(path)


def build_all(root: Path) -> dict[str, Path]:
    """Every tiny checkpoint the tests use, under `root`."""
    root = Path(root)
    return {
        "llama": save_llama_causal_lm(root / "llama"),
        "rlhflow": save_llama_causal_lm(root / "rlhflow", seed=5),
        "qwen": save_qwen_causal_lm(root / "qwen"),
        "math_shepherd": save_mistral_style_lm(root / "math_shepherd"),
        "qwen_prm": save_qwen_prm(root / "qwen_prm"),
        "qwen_prm_native": save_qwen_prm_native(root / "qwen_prm_native"),
        "skywork": save_skywork_prm(root / "skywork"),
    }


_BUILT: dict[str, Path] | None = None


def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """`build_all` once per test process (pytest's tmp_path_factory gives the directory)."""
    global _BUILT
    if _BUILT is None:
        _BUILT = build_all(tmp_path_factory.mktemp("tiny_models"))
    return _BUILT


# the option of each PRM family under conf/prm/
PRM_OPTIONS = {"rlhflow": "rlhflow-8b", "math_shepherd": "math-shepherd", "qwen_prm": "qwen2.5-math-prm-7b",
               "skywork": "skywork-1.5b"}


def tiny_prm_config(family: str, path, *overrides: str, engine: str = "hf"):
    """The typed config of `family`'s option (conf/prm/) on the tiny checkpoint at `path`, run by `engine`
    (`prm/engine=hf|vllm`) in float32 without the checkpoint's own code, then `overrides` (`prm.engine.device=cpu`)."""
    from conftest import typed_config

    return typed_config([f"prm={PRM_OPTIONS[family]}", f"prm/engine={engine}", f"prm.path={path}", "prm.dtype=float32",
                         "prm.trust_remote_code=false", *overrides]).prm


if __name__ == "__main__":  # python tests/tiny_models.py /tmp/tiny  -> build them for manual runs
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tts.*

    for name, where in build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_models")).items():
        print(f"{name}: {where}")
