"""Shared helpers of the command-line entry points: YAML configs, logging, typed options."""
import argparse
import logging
import sys
from pathlib import Path

# The option types live in the library (the corpus preparers declare options too); the CLIs
# import them from here with the other helpers.
from genser.options import read_yaml, str2bool, str_or_none  # noqa: F401

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


def load_config(parser, argv=None):
    """Parses ``argv`` with option defaults taken from ``--config conf.yaml`` (if given).

    Precedence: command line > config file > parser defaults.  Config keys are option names
    (``-`` or ``_``); unknown keys are an error naming the file.  A ``--config`` option is added
    to the parser if it has none.
    """
    if not any("--config" in a.option_strings for a in parser._actions):
        parser.add_argument("--config", type=str_or_none, default=None,
                            help="YAML file whose keys set option defaults (CLI flags override)")
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config not in (None, "", "none"):
        cfg = read_yaml(known.config)
        actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
        defaults = {}
        for key, value in cfg.items():
            dest = str(key).replace("-", "_")
            if dest not in actions:
                parser.error(f"{known.config}: unknown option {key!r} (known: "
                             f"{', '.join(sorted(actions))})")
            action = actions[dest]
            if action.type is not None and isinstance(value, str):
                value = action.type(value)
            # argparse checks choices on the command line only, never on defaults
            if action.choices is not None and value not in action.choices:
                parser.error(f"{known.config}: {key}: invalid choice {value!r} (choose from "
                             f"{', '.join(map(str, action.choices))})")
            defaults[dest] = value
            action.required = False  # satisfied by the config file
        parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def setup_logging(log_file=None, level=logging.INFO):
    """Logs to stderr (and ``log_file`` if given) in genser's format; safe to call twice."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
    return logging.getLogger()


def log_args(args, logger=None):
    """Logs the resolved options, one per line (what a run actually used)."""
    logger = logger or logging.getLogger()
    logger.info("options:\n%s", "\n".join(f"  {k}: {v!r}" for k, v in sorted(vars(args).items())))
