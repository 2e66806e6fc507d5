"""Typed option values for argparse: the command-line entry points (genser.bin) and the corpus
preparers' ``add_arguments`` both declare options with them, so they live in the library."""
import argparse

__all__ = ["str2bool", "str_or_none"]


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
