"""Shared pytest fixtures and markers.

Real data lives in ../shared (``$GENSER_SHARED`` overrides): fixtures that need it skip cleanly
when it is absent, so the suite also runs on a bare clone.
"""
import os
import sys
from pathlib import Path

import pytest

import genser  # noqa: F401  (installs genser.compat before any test imports torchaudio)

REPO = Path(__file__).resolve().parents[1]


def _shared():
    return Path(os.environ.get("GENSER_SHARED", Path(__file__).resolve().parents[2] / "shared"))


# `make test` deselects the tests of these markers (FAST in the Makefile); `make check` runs all.
HEAVY_MARKERS = {
    "slow": "takes more than a few seconds",
    "recipe": "runs a recipe end to end (egs/synth through ser.sh)",
    "ddp": "starts several training processes (torchrun, DDP)",
    "slurm": "needs the one-node Slurm cluster of tests/slurm (root; skips without it)",
}
# The fixtures that make a test heavy by themselves: whoever uses one gets its marker.
FIXTURE_MARKERS = {"trained_recipe": "recipe", "slurm": "slurm"}


def pytest_configure(config):
    for name, text in HEAVY_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.addinivalue_line("markers", "corpus: reads a real corpus or model from ../shared")
    config.addinivalue_line("markers", "badinput: one case of the bad-input and reliability matrix")
    # Tests run small tensor ops: with several intra-op threads on a busy 2-core machine, OpenMP
    # contention made torchaudio's fbank ~100x slower (measured). GENSER_TEST_THREADS overrides.
    import torch

    torch.set_num_threads(int(os.environ.get("GENSER_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def repo_dir():
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def shared_dir():
    """../shared (or $GENSER_SHARED); skips the test when absent."""
    path = _shared()
    if not path.is_dir():
        pytest.skip(f"shared data dir not found: {path} (set GENSER_SHARED)")
    return path


@pytest.fixture(scope="session")
def emodb_dir(shared_dir):
    """The processed EmoDB copy (wav/*.wav at 22050 Hz); skips when absent."""
    path = shared_dir / "corpora" / "emodb"
    if not (path / "wav").is_dir() or not any((path / "wav").glob("*.wav")):
        pytest.skip(f"EmoDB not found under {path}")
    return path


@pytest.fixture(scope="session")
def urdu_dir(shared_dir):
    """The shared URDU copy (Angry/ Happy/ Neutral/ Sad/); skips when absent."""
    path = shared_dir / "corpora" / "urdu"
    if not (path / "Angry").is_dir():
        pytest.skip(f"URDU not found under {path}")
    return path


@pytest.fixture(scope="session")
def whisper_dir(shared_dir):
    """The transformers whisper-base folder; skips when absent."""
    path = shared_dir / "models" / "whisper-base"
    if not (path / "config.json").is_file():
        pytest.skip(f"whisper-base not found under {path}")
    return path


@pytest.fixture(scope="session")
def venv_python():
    """The python running the tests (the one genser is installed in), as a path string."""
    return sys.executable
