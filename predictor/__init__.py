"""Budget estimators: a question in, a token budget out.

``Estimator`` is the one seam: the fine-tuned BERT regressor, the paper's zero-shot LLM estimator,
the baselines and the ONNX runtime estimator (``export.runtime``) all satisfy it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class Estimator(Protocol):
    def predict(self, questions: Sequence[str]) -> list[int]: ...


class TrainableEstimator(Estimator, Protocol):
    def save(self, directory: Path) -> None: ...
