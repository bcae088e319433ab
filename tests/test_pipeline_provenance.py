"""Provenance of a run: version, commit (when the code runs from a git checkout), config hash."""

import re

from ehrjudge import __version__
from ehrjudge.config import to_dict
from ehrjudge.pipeline.config import RunConfig, run_settings
from ehrjudge.pipeline.provenance import config_hash, git_commit, provenance


def test_config_hash_follows_the_settings_only():
    # Setup
    default, other = run_settings(RunConfig()), run_settings(RunConfig(suite_records=7))
    # Run / Assert: stable for equal settings whatever the key order, different for another setting
    assert config_hash(default) == config_hash(dict(reversed(list(default.items()))))
    assert config_hash(default) != config_hash(other)
    assert re.fullmatch(r"[0-9a-f]{16}", config_hash(default))


def test_provenance_names_version_and_commit(tmp_path):
    # Run
    made = provenance(to_dict(RunConfig()))
    # Assert: a commit where the package runs from a git checkout, none elsewhere
    assert made["version"] == __version__
    assert made["commit"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", made["commit"])
    assert git_commit(tmp_path) is None
