"""``tale serve``, the budget-aware OpenAI-compatible gateway: its settings (``config``, importable without the
web stack), the estimator queue and upstream client (``gateway``), and the web app (``app``). Torch-free."""
