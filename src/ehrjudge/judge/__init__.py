"""The LLM judge: model loading, prompt, exact label distribution, constrained generation, baseline."""
