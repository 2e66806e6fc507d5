"""Typed option values for argparse: the command-line entry points (genser.bin) and the corpus
preparers' ``add_arguments`` both declare options with them, so they live in the library; and the
YAML mapping reader that config files and exports share."""
import argparse
from pathlib import Path

__all__ = ["str2bool", "str_or_none", "read_yaml", "name_value_pairs"]


def str2bool(value):
    """ESPnet-style boolean option (argparse type): only "true"/"false", in any case, as
    utils/parse_options.sh accepts them."""
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return low == "true"


def str_or_none(value):
    """argparse type: the string, or None for none/null/empty."""
    return None if value is None or str(value).strip().lower() in ("", "none", "null") else str(value)


def read_yaml(path):
    """Loads a YAML mapping (an empty file gives {}); anything else raises ValueError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def name_value_pairs(specs, option, metavar, what):
    """{name: value} from repeated ``NAME=VALUE`` options (``--exp EmoDB=exp/x``), in their order;
    ValueError for a malformed one or a name given twice (``what`` names it in the message)."""
    out = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{option} expects {metavar}, got {spec!r}")
        if name in out:
            raise ValueError(f"{what} {name} given twice")
        out[name] = value
    return out
