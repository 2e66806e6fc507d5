"""genser.bin.common: --config YAML with command-line overrides, typed options, logging."""
import argparse
import logging
import re

import pytest

from genser.bin.common import LOG_FORMAT, load_config, setup_logging, str2bool, str_or_none


def parser():
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--use_gpu", type=str2bool, default=False)
    p.add_argument("--tag", type=str_or_none, default="x")
    return p


def test_config_sets_defaults_and_cli_overrides(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("data_dir: data/all\nepochs: 9\nuse-gpu: 'true'\ntag: null\n")
    args = load_config(parser(), ["--config", str(conf), "--epochs", "2"])
    assert (args.data_dir, args.epochs, args.use_gpu, args.tag) == ("data/all", 2, True, None)
    args = load_config(parser(), ["--data_dir", "d"])
    assert (args.epochs, args.use_gpu, args.tag, args.config) == (5, False, "x", None)


def test_config_unknown_key_is_an_error(tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text("data_dir: d\nepoch: 3\n")
    with pytest.raises(SystemExit):
        load_config(parser(), ["--config", str(conf)])
    assert "unknown option 'epoch'" in capsys.readouterr().err


def test_config_value_outside_the_choices_is_an_error(tmp_path, capsys):
    # argparse checks choices on the command line only: a config file's value must be checked
    # too (an old train config with calibrate: auto must not run as something else)
    p = parser()
    p.add_argument("--calibrate", default="crossfit", choices=("crossfit", "inner", "none"))
    conf = tmp_path / "c.yaml"
    conf.write_text("data_dir: d\ncalibrate: inner\n")
    assert load_config(p, ["--config", str(conf)]).calibrate == "inner"
    conf.write_text("data_dir: d\ncalibrate: auto\n")
    with pytest.raises(SystemExit):
        load_config(p, ["--config", str(conf)])
    assert f"{conf}: calibrate: invalid choice 'auto' (choose from crossfit, inner, none)" in capsys.readouterr().err


def test_str2bool():
    assert str2bool("true") is True and str2bool("False") is False
    with pytest.raises(argparse.ArgumentTypeError):
        str2bool("maybe")


def test_setup_logging_writes_file(tmp_path):
    log = tmp_path / "x" / "run.log"
    setup_logging(log)
    logging.getLogger("genser.test").info("hello")
    logging.getLogger().handlers[-1].flush()
    line = log.read_text().strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [0-9:,]+ \(test_common:\d+\) INFO: hello", line)
    assert LOG_FORMAT.startswith("%(asctime)s")
    setup_logging()
