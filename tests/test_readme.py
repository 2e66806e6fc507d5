"""The README's Library example runs as written."""
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
