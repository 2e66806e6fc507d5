"""The layering of the package: the library (genser/) never imports the command-line layer."""
import ast
from pathlib import Path

GENSER = Path(__file__).resolve().parents[1] / "genser"


def _imports(path):
    """The module names that the file imports (absolute imports only: genser uses no others)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_library_does_not_import_the_cli():
    library = [p for p in GENSER.rglob("*.py") if "bin" not in p.relative_to(GENSER).parts]
    assert len(library) > 20
    upward = {str(p.relative_to(GENSER)): name for p in library for name in _imports(p)
              if name == "genser.bin" or name.startswith("genser.bin.")}
    assert not upward, f"library modules import genser.bin: {upward}"
