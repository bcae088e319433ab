"""ehrjudge: LLM judges of synthetic EHR, trained with RL from verifiable rewards.

Pipeline: cohort (real tables -> patient vectors) -> synth (generators, judge dataset)
-> scoring (verifiable realism score, evaluation suite) -> judge (LLM scoring)
-> train (RLVR) -> pipeline (end-to-end run, report, registry gate).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from ehrjudge import Judge, RealismScorer` without importing torch for every `import ehrjudge`."""
    if name == "Judge":
        from ehrjudge.api import Judge

        return Judge
    if name == "RealismScorer":
        from ehrjudge.scoring.realism import RealismScorer

        return RealismScorer
    raise AttributeError(f"module 'ehrjudge' has no attribute {name!r}")
