"""Local generation with transformers: batched, left-padded, through the model's chat template."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from reasoner.backends import Generation, SamplingConfig, backend_identity
from reasoner.errors import ConfigError
from reasoner.models import resolve_model
from reasoner.prompts import Prompt

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass(frozen=True)
class HFConfig:
    """Settings of the local transformers backend."""

    model: str = "default"  # "default" (the embedded reasoner), a local directory or a hub id
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    dtype: str = "float32"  # bfloat16 is about 2x faster on recent CPUs, float16 for GPUs
    batch_size: int = 8  # prompts per forward pass; similar lengths are batched together
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


class HFBackend:
    """Satisfies ``Backend`` with a local transformers causal LM."""

    def __init__(self, config: HFConfig = HFConfig()) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.name = config.model
        self.identity = backend_identity("hf", dtype=config.dtype)
        path = resolve_model(config.model)
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = "auto" if config.dtype == "auto" else getattr(torch, config.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        self.device = device
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self._stop_ids = set(eos) | {self.tokenizer.eos_token_id}
        logger.info("loaded %s (%s) on %s as %s", config.model, path, device, config.dtype)

    def _encode(self, prompt: Prompt) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                prompt.messages(), tokenize=False, add_generation_prompt=True
            )
        return prompt.user if prompt.system is None else f"{prompt.system}\n\n{prompt.user}"

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        texts = [self._encode(p) for p in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        # Batching prompts of similar length wastes less compute on padding.
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        results: dict[int, Generation] = {}
        size = self.config.batch_size
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            for i, generation in zip(batch, self._generate_batch([texts[i] for i in batch], max_new_tokens)):
                results[i] = generation
        return [results[i] for i in range(len(texts))]

    def _generate_batch(self, texts: list[str], max_new_tokens: int) -> list[Generation]:
        """Decode a left-padded batch, dropping each row from the batch (and its KV cache) as soon
        as it stops: transformers' ``generate`` keeps finished rows until the longest one ends,
        which on a CPU costs more than batching saves when answer lengths differ a lot."""
        import torch
        from transformers import DynamicCache

        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        mask = encoded.attention_mask
        prompt_tokens = mask.sum(dim=1).tolist()
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        step_input = encoded.input_ids
        active = list(range(len(texts)))  # batch row -> index in ``texts``
        generated: list[list[int]] = [[] for _ in texts]
        stopped = [False] * len(texts)
        cache = DynamicCache(config=self.model.config)
        generator = torch.Generator(device=self.device).manual_seed(self.config.sampling.seed)
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                logits = self.model(input_ids=step_input, attention_mask=mask, position_ids=positions,
                                    past_key_values=cache, use_cache=True).logits[:, -1, :]
                tokens = self._choose(logits.float(), generator).tolist()
                keep = []
                for row, (index, token) in enumerate(zip(active, tokens)):
                    generated[index].append(token)
                    stopped[index] = token in self._stop_ids
                    if not stopped[index] and len(generated[index]) < max_new_tokens:
                        keep.append(row)
                if not keep:
                    break
                if len(keep) < len(active):
                    rows = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(rows)
                    mask, positions = mask[rows], positions[rows]
                    active, tokens = [active[r] for r in keep], [tokens[r] for r in keep]
                mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
                positions = positions[:, -1:] + 1
                step_input = torch.tensor(tokens, device=self.device)[:, None]
        return [
            Generation(
                text=self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                prompt_tokens=int(n_prompt),
                output_tokens=len(ids),
                finish_reason="stop" if stop else "length",
            )
            for ids, n_prompt, stop in zip(generated, prompt_tokens, stopped)
        ]

    def _choose(self, logits, generator):
        """The next token per row: argmax, or a temperature / top-p sample."""
        import torch

        sampling = self.config.sampling
        if sampling.greedy:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= sampling.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
