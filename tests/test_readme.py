"""The README's Library example runs as written, and its links resolve."""
import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_library_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text[text.index("## Library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script))
    accuracy = float(capsys.readouterr().out.split("accuracy:")[1])
    assert accuracy > 0.95
    assert (tmp_path / "toy.pt").exists()


def test_relative_links_resolve():
    """Every [text](path) link of the README to a file of the repository points at one."""
    links = re.findall(r"\]\(([^)#:]+)\)", README.read_text())
    assert links
    missing = [link for link in links if not (README.parent / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_quick_start_commands_are_make_targets():
    """The `make X` lines that open the README are targets of the Makefile, and what `make test`
    leaves out is the set of heavy markers that tests/conftest.py declares."""
    from conftest import HEAVY_MARKERS

    text = README.read_text()
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", text, re.S).group(1)
    commands = re.findall(r"^make (\w+)", block, re.M)
    assert commands[:3] == ["demo", "test", "check"]
    makefile = (README.parent / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    assert set(commands) <= targets
    fast = re.search(r"^FAST \?= not \((.*)\)$", makefile, re.M).group(1)
    assert set(fast.split(" or ")) == set(HEAVY_MARKERS)


def block(heading, lang="python"):
    """The first ``lang`` code block after ``heading`` in the README."""
    text = README.read_text()
    return re.search(rf"```{lang}\n(.*?)```", text[text.index(heading):], re.S).group(1)


def test_inference_example_runs(tmp_path, monkeypatch, capsys):
    """The five-line Classifier example, on a model.pt with a frontend and two audio files."""
    from test_infer_api import fbank_model, tone

    monkeypatch.chdir(tmp_path)
    fbank_model(tmp_path / "model.pt")
    tone(tmp_path / "a.wav")
    tone(tmp_path / "meeting.wav", seconds=7.0)
    code = block("### From Python")
    assert len(code.strip().splitlines()) <= 6  # the import, a blank line, then the five lines
    (tmp_path / "example.py").write_text(code)
    scope = runpy.run_path(str(tmp_path / "example.py"))
    label, confidence = capsys.readouterr().out.split()[:2]
    assert label in ("neutral", "happy", "angry", "sad") and 0.25 <= float(confidence) <= 1
    assert len(scope["timeline"].segments) == 4  # 3-s windows every 1.5 s over 7 s


def test_onnx_one_liner_runs_on_an_export(tmp_path, monkeypatch):
    """The ONNX one-liner reads the input shape from the graph, so it runs on any model's head."""
    import subprocess
    import sys

    import pytest

    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from test_infer_api import fbank_model

    from genser.bin import export

    monkeypatch.chdir(tmp_path)
    model = fbank_model(tmp_path / "exp" / "model.pt", kind="genser")  # fbank: 240 dims, not eGeMAPS' 88
    export.main(["--model", str(model), "--out_dir", "export/emodb_egemaps", "--licence", "MIT", "--onnx"])
    line = next(x for x in block("`genser-export` writes", "bash").splitlines() if x.startswith("python -c"))
    code = re.search(r'python -c "(.*)"', line).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count(".") >= 4  # one row of 4 posteriors


def test_dump_reading_example_runs_from_another_directory(tmp_path, monkeypatch, capsys):
    import numpy as np

    from feature_fixtures import write_feats_dir

    dump = tmp_path / "recipe" / "dump" / "fbank_no_cmvn_meanstd"
    feats = {f"u{i}": np.full((5, 1, 8), i, np.float32) for i in range(3)}
    write_feats_dir(dump, feats, {"frontend": {"type": "s3prl", "name": "fbank_no_cmvn"}, "pooling": "none"})
    assert not Path((dump / "feats.scp").read_text().split()[1].split(":")[0]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code = block("reads from Python in").replace('"dump/fbank_no_cmvn_meanstd"', repr(str(dump)))
    assert repr(str(dump)) in code
    (tmp_path / "dump_example.py").write_text(code)
    runpy.run_path(str(tmp_path / "dump_example.py"))
    assert capsys.readouterr().out.startswith("3 (5, 1, 8)")
