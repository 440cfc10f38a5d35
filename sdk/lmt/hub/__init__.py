"""Publishing to the Hugging Face Hub: model cards now; push/pull of runs with the fine-tuning work."""
