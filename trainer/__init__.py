"""The trainer: fits the nutrition head to collected labels and hot-swaps it when it is better."""
