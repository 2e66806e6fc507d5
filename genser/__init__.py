"""genser: Gen-SER, speech emotion recognition as generative distribution transport."""
# The compatibility layer must be installed before anything imports torchaudio or s3prl.
from genser import compat  # noqa: F401  # isort: skip

__version__ = "0.1.0"
