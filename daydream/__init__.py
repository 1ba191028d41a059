"""daydream: score LLM essays with several LLM judges."""
