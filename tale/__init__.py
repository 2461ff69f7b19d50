"""The front door: the tale CLI, the end-to-end pipeline, evaluation and ablation."""
