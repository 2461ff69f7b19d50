"""Local generation on onnxruntime-genai: the fast CPU engine (3-6x the hf backend's tokens/s).

The model is built once from a local transformers directory (``ort_build.ensure_onnx``). Prompts
go through the source directory's own transformers tokenizer and chat template, so prompt and
output token counts are exactly the hf backend's; the stop tokens are the hf backend's too (the
generation config's end tokens and the tokenizer's). Batches are static: a finished row stops
being read at its end token while the longest row finishes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reasoner.backends import Generation, SamplingConfig, backend_identity
from reasoner.backends.ort_build import PRESETS, ensure_onnx
from reasoner.errors import ConfigError
from reasoner.models import resolve_model
from reasoner.prompts import Prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ORTConfig:
    """Settings of the onnxruntime-genai backend."""

    model: str = "default"  # "default" (the embedded reasoner) or a local model directory
    # A PRESETS name. int8 keeps most of the hf backend's answers (73.5% the same on 200 GSM8K questions; fp32 all).
    # int4-b128 is 1.3-2x faster and within 2 points on GSM8K, but on the main job's arithmetic it answered 43.8%
    # against int8's 68.8% (p = 0.039): docs/results/ort-engine.md, docs/results/main-job.md.
    precision: str = "int8"
    extra_options: tuple[tuple[str, str], ...] = ()  # more builder options, e.g. (("accuracy_level", "1"),)
    batch_size: int = 8  # prompts per static batch; similar lengths are batched together
    # Intra-op threads: every core measured best on an idle 2-core machine (1.9x one thread at batch 8);
    # give 1 when another heavy job shares the CPU.
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.precision not in PRESETS:
            raise ConfigError(f"precision must be one of {tuple(PRESETS)}, got {self.precision!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


def stop_token_ids(source: str | Path, tokenizer) -> set[int]:
    """The hf backend's end tokens: the generation config's ``eos_token_id`` and the tokenizer's."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(source).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return {int(e) for e in eos} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


class ORTBackend:
    """Satisfies ``Backend`` with an onnxruntime-genai model built from a local directory."""

    def __init__(self, config: ORTConfig | None = None) -> None:
        import onnxruntime_genai as og
        from transformers import AutoTokenizer

        config = config or ORTConfig()
        self.config = config
        self.name = config.model
        self.identity = backend_identity("ort", precision=config.precision)
        source = Path(resolve_model(config.model))
        precision, options = PRESETS[config.precision]
        self.onnx_dir = ensure_onnx(source, precision, options + config.extra_options)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self._stop_ids = stop_token_ids(source, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._stop_ids)
        genai_config = og.Config(str(self.onnx_dir))
        genai_config.overlay(json.dumps({"model": {
            "eos_token_id": sorted(self._stop_ids),
            "pad_token_id": self._pad_id,
            "decoder": {"session_options": {"intra_op_num_threads": config.threads, "inter_op_num_threads": 1}},
        }}))
        self._og = og
        self.model = og.Model(genai_config)
        self._vocab = json.loads((self.onnx_dir / "genai_config.json").read_text())["model"]["vocab_size"]
        logger.info("loaded %s (%s, %s) from %s with %d thread(s)", config.model, source, config.precision,
                    self.onnx_dir, config.threads)

    def _encode(self, prompt: Prompt) -> list[int]:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
        else:
            text = prompt.user if prompt.system is None else f"{prompt.system}\n\n{prompt.user}"
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        encoded = [self._encode(p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: dict[int, Generation] = {}
        size = self.config.batch_size
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            for i, generation in zip(batch, self._generate_batch([encoded[i] for i in batch], max_new_tokens)):
                results[i] = generation
        return [results[i] for i in range(len(encoded))]

    def _generate_batch(self, batch: list[list[int]], max_new_tokens: int) -> list[Generation]:
        """One static batch, right-padded (genai masks the pad token); each row ends at its first
        end token or at ``max_new_tokens``."""
        import numpy as np

        og, sampling = self._og, self.config.sampling
        width = max(len(ids) for ids in batch)
        params = og.GeneratorParams(self.model)
        options = dict(max_length=width + max_new_tokens, batch_size=len(batch), do_sample=not sampling.greedy)
        if not sampling.greedy:
            # top_k as the whole vocabulary: the hf backend samples from temperature and top-p only.
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=self._vocab,
                           random_seed=sampling.seed)
        params.set_search_options(**options)
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.array([ids + [self._pad_id] * (width - len(ids)) for ids in batch], dtype=np.int32))
        # Tokens are read step by step: at batch size 1 genai leaves the final end token out of
        # ``get_sequence``, and the hf backend counts it.
        generated: list[list[int]] = [[] for _ in batch]
        stopped = [False] * len(batch)
        for _ in range(max_new_tokens):
            if generator.is_done() or all(stopped):
                break
            generator.generate_next_token()
            for row, token in enumerate(generator.get_next_tokens()):
                if not stopped[row]:
                    generated[row].append(int(token))
                    stopped[row] = int(token) in self._stop_ids
        generations = []
        for row, (ids, new) in enumerate(zip(batch, generated)):
            generations.append(Generation(
                text=self.tokenizer.decode(new, skip_special_tokens=True).strip(),
                prompt_tokens=len(ids),
                output_tokens=len(new),
                finish_reason="stop" if stopped[row] else "length",
            ))
        return generations
