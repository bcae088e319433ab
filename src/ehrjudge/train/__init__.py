"""RLVR training of the judge: three trainers (expected, reinforce, grpo) sharing one loop (loop.py)."""
