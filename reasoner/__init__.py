"""The reasoner side of TALE: prompts, answer grading, generation backends and post-training."""
