"""ehrjudge: LLM judges of synthetic EHR, trained with RL from verifiable rewards.

Pipeline: cohort (real tables -> patient vectors) -> synth (generators, judge dataset)
-> scoring (verifiable realism score, evaluation suite) -> judge (LLM scoring)
-> train (RLVR) -> pipeline (end-to-end run, report, registry gate).
"""

__version__ = "0.1.0"
