"""genser.bin.score on synthetic experiment trees: numbers in RESULTS.md, PNGs, error cases."""
import random
import statistics

import pytest

from genser import scoring
from genser.bin import score

LABELS = ["neutral", "happy", "angry", "sad"]
FOLD_SIZES = {"1": 24, "2": 20}
# (system, setting) -> share of utterances whose hypothesis is forced to be right
SYSTEMS = {("genser", "nsteps1_eta0.0"): 0.6, ("genser", "nsteps3_eta0.0"): 0.7,
           ("genser", "nsteps3_eta0.5"): 0.5, ("classifier", "argmax"): 0.65}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_decodes(seed=0):
    """{(system, setting, fold): [(utt, ref, hyp)]}, seeded, with errors spread over labels."""
    rng = random.Random(seed)
    decodes = {}
    for (system, setting), p_right in SYSTEMS.items():
        for fold, n in FOLD_SIZES.items():
            rows = []
            for i in range(n):
                # Imbalanced references (half are "sad"), the same for every system: UA != WA.
                ref = LABELS[min(3, (i * 5 + int(fold)) % 6)]
                hyp = ref if rng.random() < p_right else rng.choice(LABELS)
                rows.append((f"spk{fold}_utt{i:03d}", ref, hyp))
            decodes[(system, setting, fold)] = rows
    return decodes


def write_tree(exp_dir, decodes, labels=LABELS):
    for (system, setting, fold), rows in decodes.items():
        write_hyp(exp_dir / system / f"fold_{fold}" / f"decode_{setting}" / "hyp.tsv", rows, labels)
    return exp_dir


def write_hyp(path, rows, labels=LABELS):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(["utt", "ref", "hyp", *labels])]
    for utt, ref, hyp in rows:
        scores = [f"{0.7 if lab == hyp else 0.1:.6f}" for lab in labels]
        lines.append("\t".join([utt, ref, hyp, *scores]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def expected(rows):
    """UA, WA, macro-F1, weighted-F1 from (utt, ref, hyp) rows, by precision/recall definitions."""
    refs = [r for _, r, _ in rows]
    hyps = [h for _, _, h in rows]
    recall, f1, support = [], {}, {}
    for c in LABELS:
        tp = sum(r == c and h == c for r, h in zip(refs, hyps))
        n_hyp, n_ref = hyps.count(c), refs.count(c)
        support[c] = n_ref
        if n_ref:
            recall.append(tp / n_ref)
        if n_ref or n_hyp:
            p, r = (tp / n_hyp if n_hyp else 0.0), (tp / n_ref if n_ref else 0.0)
            f1[c] = 2 * p * r / (p + r) if p + r else 0.0
    return {"ua": sum(recall) / len(recall), "wa": sum(r == h for r, h in zip(refs, hyps)) / len(rows),
            "macro_f1": sum(f1.values()) / len(f1),
            "weighted_f1": sum(f1.get(c, 0.0) * support[c] for c in LABELS) / len(rows)}


def pct(x):
    return f"{100 * x:.1f}"


def expected_row(decodes, system, setting, folds=("1", "2")):
    """Table cells as score.py should print them: mean ± std over folds, pooled, counts."""
    per_fold = [expected(decodes[(system, setting, f)]) for f in folds]
    pooled = expected([row for f in folds for row in decodes[(system, setting, f)]])

    def mean_std(m):
        values = [s[m] for s in per_fold]
        if len(values) == 1:
            return pct(values[0])
        return f"{pct(sum(values) / len(values))} ± {pct(statistics.stdev(values))}"

    return {"mean_std": {m: mean_std(m) for m in ("ua", "wa", "macro_f1", "weighted_f1")},
            "pooled": {m: pct(pooled[m]) for m in ("ua", "wa", "macro_f1")},
            "folds": [{m: pct(s[m]) for m in s} for s in per_fold],
            "n": sum(len(decodes[(system, setting, f)]) for f in folds)}


def section(text, heading):
    """Table rows (lists of cells) of the Markdown section ``## heading``."""
    body = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in body.splitlines() if line.startswith("|")]
    return rows[0], [r for r in rows[2:]]


def row_of(rows, *first):
    matches = [r for r in rows if tuple(r[:len(first)]) == first]
    assert len(matches) == 1, (first, rows)
    return matches[0]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    exp_dir = write_tree(tmp_path_factory.mktemp("exp") / "emotion_fbank", make_decodes())
    score.main(["--exp_dir", str(exp_dir)])
    return exp_dir, (exp_dir / "RESULTS.md").read_text(encoding="utf-8"), make_decodes()


def test_main_table_numbers(scored):
    exp_dir, text, decodes = scored
    header, rows = section(text, "Main results")
    assert header == ["System", "Setting", "UA", "WA", "macro-F1", "weighted-F1", "pooled UA", "pooled WA",
                      "pooled macro-F1", "folds", "utts"]
    assert [r[:2] for r in rows] == [["genser", "nsteps1_eta0.0"], ["classifier", "argmax"]]
    for system, setting in (("genser", "nsteps1_eta0.0"), ("classifier", "argmax")):
        want = expected_row(decodes, system, setting)
        got = row_of(rows, system, setting)
        assert got[2:6] == [want["mean_std"][m] for m in ("ua", "wa", "macro_f1", "weighted_f1")]
        assert got[6:9] == [want["pooled"][m] for m in ("ua", "wa", "macro_f1")]
        assert got[9:] == ["2", str(want["n"])] == ["2", "44"]


def test_header_lines(scored):
    _, text, _ = scored
    assert text.startswith("# Results: emotion_fbank\n")
    for prefix in ("- date: ", "- command: `python -m genser.bin.score --exp_dir ", "- environment: python "):
        assert prefix in text
    assert "torch" in text and "CPU:" in text
    assert "labels (4): neutral, happy, angry, sad" in text and "warning" not in text


def test_per_fold_table(scored):
    _, text, decodes = scored
    header, rows = section(text, "Per fold")
    assert header[:6] == ["Fold", "utts", "genser UA", "genser WA", "genser macro-F1", "genser weighted-F1"]
    assert header[6:] == ["classifier UA", "classifier WA", "classifier macro-F1", "classifier weighted-F1"]
    for i, fold in enumerate(("1", "2")):
        want_g = expected_row(decodes, "genser", "nsteps1_eta0.0")["folds"][i]
        want_c = expected_row(decodes, "classifier", "argmax")["folds"][i]
        keys = ("ua", "wa", "macro_f1", "weighted_f1")
        assert row_of(rows, fold) == [fold, str(FOLD_SIZES[fold]), *(want_g[k] for k in keys),
                                      *(want_c[k] for k in keys)]


def test_steps_ablation_table(scored):
    _, text, decodes = scored
    _, rows = section(text, "Steps ablation")
    assert [r[:4] for r in rows] == [["genser", "nsteps1_eta0.0 *", "1", "0.0"],
                                     ["genser", "nsteps3_eta0.0", "3", "0.0"],
                                     ["genser", "nsteps3_eta0.5", "3", "0.5"],
                                     ["classifier", "argmax (reference)", "-", "-"]]
    for row, (system, setting) in zip(rows, SYSTEMS):
        want = expected_row(decodes, system, setting)
        assert row[4:7] == [want["mean_std"][m] for m in ("ua", "wa", "macro_f1")]
        assert row[7:] == [want["pooled"][m] for m in ("ua", "wa", "macro_f1")] + ["2"]


def test_pngs_are_written_and_linked(scored):
    exp_dir, text, _ = scored
    for name in ("confusion_genser_nsteps1_eta0.0.png", "confusion_classifier_argmax.png", "steps_ablation.png"):
        data = (exp_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
        assert f"]({name})" in text
    assert not [p for p in exp_dir.iterdir() if p.name.endswith(".tmp")]


def test_main_table_printed(tmp_path, capsys):
    exp_dir = write_tree(tmp_path / "x", {k: v for k, v in make_decodes().items() if k[1] != "nsteps3_eta0.5"})
    score.main(["--exp_dir", str(exp_dir)])
    out = capsys.readouterr().out
    assert "| genser | nsteps1_eta0.0 |" in out and "| classifier | argmax |" in out


def test_primary_title_and_out(tmp_path):
    decodes = make_decodes()
    exp_dir = write_tree(tmp_path / "x", decodes)
    out = tmp_path / "report" / "R.md"
    score.main(["--exp_dir", str(exp_dir), "--out", str(out), "--title", "My run", "--primary", "nsteps3_eta0.5"])
    text = out.read_text()
    assert text.startswith("# My run\n")
    _, rows = section(text, "Main results")
    want = expected_row(decodes, "genser", "nsteps3_eta0.5")
    assert row_of(rows, "genser", "nsteps3_eta0.5")[2] == want["mean_std"]["ua"]
    assert row_of(rows, "classifier", "argmax")  # a system without that setting keeps its own
    assert (out.parent / "confusion_genser_nsteps3_eta0.5.png").read_bytes().startswith(PNG_MAGIC)
    assert not (exp_dir / "RESULTS.md").exists()


def test_primary_setting_default():
    assert scoring.primary_setting(["nsteps3_eta0.0", "nsteps10_eta0.0", "nsteps1_eta0.5"]) == "nsteps3_eta0.0"
    assert scoring.primary_setting(["nsteps3_eta0.5", "nsteps2_eta1.0"]) == "nsteps2_eta1.0"
    assert scoring.primary_setting(["argmax"]) == "argmax"
    assert scoring.primary_setting(["nsteps1_eta0.0", "nsteps3_eta0.0"], "nsteps3_eta0.0") == "nsteps3_eta0.0"
    assert scoring.parse_setting("nsteps12_eta1e-05") == (12, 1e-05)
    assert scoring.parse_setting("argmax") is None


def test_missing_fold_is_reported_and_mean_uses_what_exists(tmp_path):
    decodes = make_decodes()
    del decodes[("classifier", "argmax", "2")]
    exp_dir = write_tree(tmp_path / "x", decodes)
    score.main(["--exp_dir", str(exp_dir)])
    text = (exp_dir / "RESULTS.md").read_text()
    assert "> **warning**: classifier argmax: no output for fold(s) 2" in text
    assert "classifier/fold_2/decode_argmax/hyp.tsv" in text
    _, rows = section(text, "Main results")
    want = expected_row(decodes, "classifier", "argmax", folds=("1",))
    got = row_of(rows, "classifier", "argmax")
    assert got[2] == want["mean_std"]["ua"] and "±" not in got[2]
    assert got[9:] == ["1", "24"]
    _, fold_rows = section(text, "Per fold")
    assert row_of(fold_rows, "2")[-4:] == ["-"] * 4


def test_single_setting_has_no_ablation_plot(tmp_path):
    decodes = {k: v for k, v in make_decodes().items() if k[1] in ("nsteps1_eta0.0", "argmax")}
    exp_dir = write_tree(tmp_path / "x", decodes)
    score.main(["--exp_dir", str(exp_dir)])
    assert not (exp_dir / "steps_ablation.png").exists()
    assert "steps_ablation.png" not in (exp_dir / "RESULTS.md").read_text()


def run_error(argv):
    with pytest.raises(SystemExit) as info:
        score.main(argv)
    return str(info.value.code)


def test_missing_exp_dir(tmp_path):
    message = run_error(["--exp_dir", str(tmp_path / "nope")])
    assert str(tmp_path / "nope") in message and "stage 4" in message


def test_no_hyp_files(tmp_path):
    (tmp_path / "x" / "genser" / "fold_1").mkdir(parents=True)
    message = run_error(["--exp_dir", str(tmp_path / "x")])
    assert "hyp.tsv" in message and str(tmp_path / "x") in message and "stage 4 (decoding)" in message
    assert not (tmp_path / "x" / "RESULTS.md").exists()


def break_one(tmp_path, rows=None, labels=LABELS, key=("genser", "nsteps3_eta0.0", "2")):
    """A good tree where the hyp.tsv of ``key`` is replaced; returns (exp_dir, that file)."""
    exp_dir = write_tree(tmp_path / "x", make_decodes())
    path = exp_dir / key[0] / f"fold_{key[2]}" / f"decode_{key[1]}" / "hyp.tsv"
    write_hyp(path, rows if rows is not None else make_decodes()[key], labels)
    return exp_dir, path


def test_duplicate_utterance(tmp_path):
    rows = make_decodes()[("genser", "nsteps3_eta0.0", "2")]
    exp_dir, path = break_one(tmp_path, rows + [rows[3]])
    message = run_error(["--exp_dir", str(exp_dir)])
    assert str(path) in message and "duplicate" in message and rows[3][0] in message


def test_inconsistent_label_set(tmp_path):
    exp_dir, path = break_one(tmp_path, [("u1", "neutral", "happy")], labels=["neutral", "happy"])
    message = run_error(["--exp_dir", str(exp_dir)])
    assert str(path) in message and "label set" in message


@pytest.mark.parametrize("row, match", [
    (("spk2_utt000", "", "happy"), "no reference label"),
    (("spk2_utt000", "bored", "happy"), "reference label 'bored'"),
    (("spk2_utt000", "happy", "bored"), "hypothesis label 'bored'"),
])
def test_bad_rows_name_utterance_and_file(tmp_path, row, match):
    exp_dir, path = break_one(tmp_path, [row])
    message = run_error(["--exp_dir", str(exp_dir)])
    assert str(path) in message and "spk2_utt000" in message and match in message


def test_bad_header_and_scores(tmp_path):
    exp_dir, path = break_one(tmp_path)
    path.write_text("id\tref\thyp\tneutral\n")
    assert "expected the header" in run_error(["--exp_dir", str(exp_dir)])
    path.write_text("utt\tref\thyp\t" + "\t".join(LABELS) + "\nu1\thappy\thappy\t0.1\tnan\t0.1\t0.1\n")
    message = run_error(["--exp_dir", str(exp_dir)])
    assert "u1" in message and "finite" in message and str(path) in message


def test_reference_mismatch_between_files(tmp_path):
    rows = make_decodes()[("genser", "nsteps3_eta0.0", "2")]
    utt, ref, hyp = rows[0]
    other = next(lab for lab in LABELS if lab != ref)
    exp_dir, path = break_one(tmp_path, [(utt, other, hyp)] + rows[1:])
    message = run_error(["--exp_dir", str(exp_dir)])
    assert utt in message and str(path) in message and "reference" in message


def test_utterance_in_two_folds(tmp_path):
    decodes = make_decodes()
    rows = decodes[("classifier", "argmax", "2")]
    exp_dir, path = break_one(tmp_path, rows + [decodes[("classifier", "argmax", "1")][0]],
                              key=("classifier", "argmax", "2"))
    message = run_error(["--exp_dir", str(exp_dir)])
    assert "two folds" in message and str(path) in message


def test_unknown_primary(tmp_path):
    exp_dir = write_tree(tmp_path / "x", make_decodes())
    message = run_error(["--exp_dir", str(exp_dir), "--primary", "nsteps9_eta0.0"])
    assert "nsteps9_eta0.0" in message and "nsteps1_eta0.0" in message


def test_config_file(tmp_path):
    exp_dir = write_tree(tmp_path / "x", make_decodes())
    conf = tmp_path / "score.yaml"
    conf.write_text(f"exp_dir: {exp_dir}\ntitle: From config\n")
    score.main(["--config", str(conf)])
    assert (exp_dir / "RESULTS.md").read_text().startswith("# From config\n")


def test_plots_direct(tmp_path):
    from genser.plots import plot_confusion, plot_steps_ablation

    path = plot_confusion([[3, 1], [0, 0]], ["a", "b"], tmp_path / "cm.png", "t")  # empty row: stays 0
    assert path.read_bytes().startswith(PNG_MAGIC)
    plot_confusion([[3, 1], [0, 2]], ["a", "b"], tmp_path / "counts.png", "t", normalize=False)
    assert (tmp_path / "counts.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="does not match 3 labels"):
        plot_confusion([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "bad.png", "t")
    rows = [{"system": "genser", "nsteps": n, "eta": 0.0, "ua": 0.5 + n / 100} for n in (1, 2, 5)]
    plot_steps_ablation(rows + [{"system": "classifier", "nsteps": None, "eta": None, "ua": 0.52}],
                        tmp_path / "abl.png")
    assert (tmp_path / "abl.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="no row with nsteps"):
        plot_steps_ablation([{"system": "classifier", "nsteps": None, "ua": 0.5}], tmp_path / "none.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abl.png", "cm.png", "counts.png"]
