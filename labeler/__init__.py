"""The labeler: asks ChatGPT (any OpenAI-compatible vision model) for a photo's nutrition."""
