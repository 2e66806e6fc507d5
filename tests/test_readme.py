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
