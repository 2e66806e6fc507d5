"""Cross-corpus work: the URDU preparer, utterance-balanced speaker folds, label maps and cells
(genser.cross), the hierarchical taxonomy config, the matrix scorer, and egs/cross end to end on
EmoDB and URDU from ../shared (skipped where they are absent)."""
import collections
from pathlib import Path

import pytest
import yaml

from corpus_fixtures import write_wav
from genser.config import resolve_config
from genser.corpora import CorpusError, get_corpus
from genser.corpora.base import balanced_speaker_folds
from genser.cross import CrossError, build_cell, pool_corpora, read_label_map, write_train_config
from genser.datadir import load_data_dir, write_data_dir
from genser.fileio import read_kv, write_kv, write_list
from genser.models import build_model
from genser.taxonomy import build_taxonomy
from genser.validate import validate_data_dir

SHARED = ["neutral", "happy", "angry", "sad"]
MAPS = {"a": {"anger": "angry", "joy": "happy", "calm": "neutral", "grief": "sad"},
        "b": {"Angry": "angry", "Happy": "happy", "Neutral": "neutral", "Sad": "sad"}}


# ------------------------------------------------------------------------ balanced speaker folds
def test_balanced_folds_are_greedy_largest_first_and_deterministic():
    counts = {"s80": 80, "s48": 48, "s40": 40, "s38": 38, "s28a": 28, "s28b": 28, "s2a": 2,
              "s2b": 2, "s12": 12, "s14": 14}
    folds = balanced_speaker_folds(counts, 3)
    assert folds == balanced_speaker_folds(dict(reversed(list(counts.items()))), 3)
    load = collections.Counter()
    for spk, fold in folds.items():
        load[fold] += counts[spk]
    # Largest first, each to the lightest fold: 80 -> 1, 48 -> 2, 40 -> 3, 38 -> 3 (40 < 48), ...
    assert folds["s80"] == "1" and folds["s48"] == "2" and folds["s40"] == "3" and folds["s38"] == "3"
    assert max(load.values()) - min(load.values()) <= 14
    assert sorted(load) == ["1", "2", "3"]


def test_balanced_folds_refuse_too_few_speakers():
    with pytest.raises(ValueError, match="cannot make 3 speaker-disjoint folds from 2"):
        balanced_speaker_folds({"a": 1, "b": 2}, 3)
    with pytest.raises(ValueError, match="at least 2"):
        balanced_speaker_folds({"a": 1, "b": 2}, 1)


# ------------------------------------------------------------------------------- URDU preparer
def make_urdu(root, files):
    for i, (folder, name) in enumerate(files):
        write_wav(Path(root) / folder / name, seed=i)
    return Path(root)


URDU_FILES = [("Angry", "SM1_F1_A01.wav"), ("Angry", "SM1_F2_A02.wav"), ("Happy", "SF1_F1_H01.wav"),
              ("Neutral", "SM5_F1_N01.wav"), ("Neutral", "SM5_F2_N02.wav"), ("Sad", "SF2_F1_S01.wav")]


def test_urdu_prepare_labels_gender_and_folds(tmp_path):
    corpus = make_urdu(tmp_path / "urdu", URDU_FILES)
    urdu = get_corpus("urdu")
    recs = urdu.prepare(corpus, tmp_path / "data", num_folds=2, expected={"total": 6})
    by_utt = {r["utt"]: r for r in recs}
    assert by_utt["SM1_F1_A01"]["emo"] == "anger" and by_utt["SF2_F1_S01"]["emo"] == "sadness"
    assert by_utt["SF1_F1_H01"]["gender"] == "f" and by_utt["SM5_F1_N01"]["gender"] == "m"
    assert (tmp_path / "data" / "labels.emo").read_text().split() == ["anger", "happiness", "sadness", "neutral"]
    # SM1 and SM5 (2 each) go to different folds, the single-utterance speakers fill them up.
    assert by_utt["SM1_F1_A01"]["fold"] != by_utt["SM5_F1_N01"]["fold"]
    assert collections.Counter(r["fold"] for r in recs) == {"1": 3, "2": 3}
    validate_data_dir(tmp_path / "data")


def test_urdu_refuses_a_file_in_the_wrong_folder(tmp_path):
    corpus = make_urdu(tmp_path / "urdu", URDU_FILES + [("Sad", "SM3_F1_H09.wav")])
    with pytest.raises(CorpusError, match=r"SM3_F1_H09.wav: emotion initial 'H' does not match its folder Sad/"):
        get_corpus("urdu").prepare(corpus, tmp_path / "data", num_folds=2)
    (corpus / "Sad" / "SM3_F1_H09.wav").unlink()
    write_wav(corpus / "Sad" / "speaker3.wav")
    with pytest.raises(CorpusError, match="speaker3.wav: file name does not follow"):
        get_corpus("urdu").prepare(corpus, tmp_path / "data", num_folds=2)


def test_urdu_real_copy_has_five_equal_folds(urdu_dir, tmp_path):
    recs = get_corpus("urdu").prepare(urdu_dir, tmp_path / "data")
    assert len(recs) == 400
    spk_folds = collections.defaultdict(set)
    for r in recs:
        spk_folds[r["spk"]].add(r["fold"])
    assert len(spk_folds) == 29 and all(len(f) == 1 for f in spk_folds.values())  # speaker-disjoint
    assert collections.Counter(r["fold"] for r in recs) == {str(f): 80 for f in range(1, 6)}


# --------------------------------------------------------------------------- label maps, cells
def test_label_map_errors_name_file_and_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("# comment\nanger angry\n\nfear\n")
    with pytest.raises(CrossError, match=r"x.txt:4: expected 'corpus_label shared_label'"):
        read_label_map(path)
    path.write_text("anger angry\nanger sad  # again\n")
    with pytest.raises(CrossError, match=r"x.txt:2: label 'anger' already mapped on line 1"):
        read_label_map(path)
    path.write_text("anger angry # trailing comment\njoy happy\n")
    assert read_label_map(path) == {"anger": "angry", "joy": "happy"}


def make_pool(tmp_path):
    """Corpus a: 4 speakers x (anger joy calm grief bored); corpus b: 3 speakers x 4 classes."""
    sources = {}
    for corpus, labels, nspk in (("a", ["anger", "joy", "calm", "grief", "bored"], 4),
                                 ("b", ["Angry", "Happy", "Neutral", "Sad"], 3)):
        recs = []
        for s in range(nspk):
            for lab in labels:
                recs.append({"utt": f"s{s}_{lab}", "path": f"/audio/{corpus}/s{s}_{lab}.wav", "spk": f"s{s}",
                             "emo": lab, "gender": "fm"[s % 2], "fold": str(s + 1)})
        write_data_dir(tmp_path / corpus / "data" / "all", recs, {"emo": labels})
        sources[corpus] = tmp_path / corpus / "data" / "all"
    pool_corpora(sources, tmp_path / "pool")
    return tmp_path / "pool"


def test_pool_prefixes_ids_and_records_the_corpus(tmp_path):
    pool = load_data_dir(make_pool(tmp_path))
    assert len(pool.utts) == 4 * 5 + 3 * 4
    assert pool.spk["a_s0_anger"] == "a_s0" and pool.fold["b_s2_Sad"] == "b_3"
    assert pool.extra["corpus"]["b_s0_Happy"] == "b"
    with pytest.raises(CrossError, match=r"missing/data/all/wav.scp not found: .*run `cd .*missing"):
        pool_corpora({"c": tmp_path / "missing" / "data" / "all"}, tmp_path / "pool2")


def test_cross_cell_drops_and_counts_unmapped_classes(tmp_path, caplog):
    pool = make_pool(tmp_path)
    caplog.set_level("INFO")
    summary = build_cell(pool, tmp_path / "cell", ["a"], "b", MAPS, "shared", SHARED)
    assert summary["dropped"] == {"a bored": 4}
    assert "dropped 4 utterance(s) of a label 'bored': not in the label map" in caplog.text
    assert "a bored 4 not in the label map" in (tmp_path / "cell" / "dropped").read_text()
    data = load_data_dir(tmp_path / "cell")
    assert data.labels("emotion") == SHARED
    folds = collections.Counter(data.fold.values())
    assert folds == {"train": 16, "b": 12}  # a: training only; b: one test fold (cross-corpus)
    assert data.emo["b_s1_Happy"] == "happy" and data.emo["a_s1_joy"] == "happy"
    validate_data_dir(tmp_path / "cell")


def test_cross_cell_uses_own_folds_when_a_corpus_is_on_both_sides(tmp_path):
    pool = make_pool(tmp_path)
    summary = build_cell(pool, tmp_path / "cell", ["a", "b"], "b", MAPS, "shared", SHARED)
    assert summary["speaker_disjoint_folds"]
    data = load_data_dir(tmp_path / "cell")
    assert {data.fold[u] for u in data.utts if u.startswith("a_")} == {"train"}
    b_folds = {u: data.fold[u] for u in data.utts if u.startswith("b_")}
    assert set(b_folds.values()) == {"1", "2", "3"}
    for utt, fold in b_folds.items():  # the corpus' own speaker folds
        assert fold == str(int(data.spk[utt][len("b_s"):]) + 1)


def test_full_label_cell_keeps_leaves_with_families(tmp_path):
    pool = make_pool(tmp_path)
    build_cell(pool, tmp_path / "cell", ["a"], "b", MAPS, "full", SHARED)
    data = load_data_dir(tmp_path / "cell")
    assert data.labels("emotion") == ["a_anger", "a_joy", "a_calm", "a_grief", "a_bored"]
    families = read_kv(tmp_path / "cell" / "families")
    assert families["a_bored"] == "bored" and families["a_calm"] == "neutral"
    assert "a_bored" not in read_kv(tmp_path / "cell" / "label2shared")
    # b is only tested: its references are the training leaves of the same family.
    assert data.emo["b_s0_Angry"] == "a_anger" and data.fold["b_s0_Angry"] == "b"
    conf = write_train_config(_base_yaml(tmp_path), tmp_path / "train.yaml", families)
    model_conf = dict(conf["model_conf"], model="genser")
    model = build_model(model_conf, data.labels("emotion"), input_dim=8, num_layers=1)
    assert model.taxonomy.levels[0] == ["angry", "happy", "neutral", "sad", "bored"]


def _base_yaml(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text("epochs: 2\nmodel_conf:\n  pooling: mean\n  taxonomy:\n    dim: 32\n")
    return path


# --------------------------------------------------------------------- hierarchical taxonomy
def test_hierarchical_taxonomy_from_the_model_config():
    families = {"x_anger": "angry", "x_joy": "happy", "y_Angry": "angry", "z_unused": "sad"}
    conf = resolve_config({"taxonomy": {"type": "hierarchical", "families": families, "level_dims": [16, 48]}})
    tax = build_taxonomy(conf["taxonomy"], ["x_anger", "x_joy", "y_Angry"])
    assert tax.levels == [["angry", "happy"], ["x_anger", "x_joy", "y_Angry"]]
    assert tax.level_dims == [16, 48]
    # Leaves of one family share the family block of the code and decode to it.
    assert (tax.codes[0, :16] == tax.codes[2, :16]).all()
    assert tax.decide_levels(tax.codes)[0].tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match=r"no family for label\(s\) \['w'\]"):
        build_taxonomy({"type": "hierarchical", "families": families}, ["x_anger", "w"])
    with pytest.raises(ValueError, match="must add up to taxonomy.dim 64"):
        build_taxonomy({"type": "hierarchical", "families": families, "level_dims": [16, 16]}, ["x_anger", "x_joy"])


# ------------------------------------------------------------------------------ matrix scorer
def _write_cell(exp, name, train, test, folds, rows, labels, label2shared, label_set="shared", taxonomy="flat"):
    d = exp / name
    (d).mkdir(parents=True)
    meta = {"train_sets": train, "test_set": test, "label_set": label_set, "taxonomy": taxonomy,
            "feat_tag": "feat", "shared_labels": ["angry", "sad"]}
    (d / "cell.yaml").write_text(yaml.safe_dump(meta))
    write_kv(d / "label2shared", label2shared)
    write_list(d / "folds.txt", folds)
    for system, setting in (("genser", "nsteps1_eta0.0"), ("classifier", "argmax")):
        for fold in folds:
            hyp = d / "seed0" / system / f"fold_{fold}" / f"decode_{setting}" / "hyp.tsv"
            hyp.parent.mkdir(parents=True)
            lines = ["\t".join(["utt", "ref", "hyp", *labels])]
            for utt, f, ref, scores in rows:
                if f == fold:
                    pred = labels[max(range(len(labels)), key=lambda j: scores[j])]
                    lines.append("\t".join([utt, ref, pred, *(f"{s:.6f}" for s in scores)]))
            hyp.write_text("\n".join(lines) + "\n")


def test_score_matrix_marks_in_corpus_cells_and_averages_the_others(tmp_path):
    exp = tmp_path / "exp"
    flat = {"angry": "angry", "sad": "sad"}
    # a -> a (in-corpus, 2 folds): 3 of 4 right; UA = (1 + 0.5) / 2 = 75 %.
    _write_cell(exp, "c1", ["a"], "a", ["1", "2"],
                [("u1", "1", "angry", [0.9, 0.1]), ("u2", "1", "sad", [0.2, 0.8]),
                 ("u3", "2", "sad", [0.6, 0.4]), ("u4", "2", "angry", [0.7, 0.3])], ["angry", "sad"], flat)
    # a -> b (cross): all right, 100 %.
    _write_cell(exp, "c2", ["a"], "b", ["b"],
                [("v1", "b", "angry", [0.9, 0.1]), ("v2", "b", "sad", [0.1, 0.9])], ["angry", "sad"], flat)
    # Full labels: leaf x_bored has no shared class. w1 is bored (not scored); w2's argmax leaf
    # is bored (leaf-level wrong) but the family marginal picks sad (0.3 + 0.3 > 0.35).
    full = {"x_angry": "angry", "x_sad": "sad", "x_grief": "sad"}
    _write_cell(exp, "c3", ["a"], "b", ["b"],
                [("w1", "b", "x_bored", [0.1, 0.1, 0.1, 0.7]), ("w2", "b", "x_sad", [0.05, 0.3, 0.3, 0.35]),
                 ("w3", "b", "x_angry", [0.8, 0.1, 0.05, 0.05])],
                ["x_angry", "x_sad", "x_grief", "x_bored"], full, label_set="full")
    out = tmp_path / "res" / "RESULTS.md"
    cmds = tmp_path / "commands.log"
    cmds.write_text("./run.sh --train_sets a\n./run.sh --train_sets a\n")
    from genser.bin import score_matrix

    assert score_matrix.main(["--exp_root", str(exp), "--out", str(out), "--commands", str(cmds)]) == 0
    text = out.read_text()
    assert "| a | 75.0* | 75.0* | 100.0 | 100.0 |" in text
    assert "Gen-SER 100.0 (1 cells); classifier 100.0 (1 cells)" in text
    assert text.count("./run.sh --train_sets a") == 1  # commands listed once
    full_row = next(line for line in text.splitlines() if line.startswith("| a → b | Gen-SER | 100.0"))
    assert full_row.split("|")[7].strip() == "50.0"  # leaf-argmax UA: w2, the only sad, wrong
    assert full_row.split("|")[11].strip() == "1"  # w1 not scored
    assert full_row.split("|")[4].strip() == "50.0"  # chance UA: 2 shared classes in the test set
    assert (out.parent / "matrix_feat_shared_flat.png").stat().st_size > 1000
    assert (out.parent / "matrix_feat_full_flat.png").is_file()


def test_score_matrix_compares_multi_with_single_and_hierarchy_with_flat(tmp_path):
    exp = tmp_path / "exp"
    flat = {"angry": "angry", "sad": "sad"}
    right = [("u1", "b", "angry", [0.9, 0.1]), ("u2", "b", "sad", [0.1, 0.9])]
    half = [("u1", "b", "angry", [0.9, 0.1]), ("u2", "b", "sad", [0.9, 0.1])]
    _write_cell(exp, "single", ["a"], "b", ["b"], half, ["angry", "sad"], flat)  # 50 %
    _write_cell(exp, "multi", ["a", "c"], "b", ["b"], right, ["angry", "sad"], flat)  # 100 %
    _write_cell(exp, "hier", ["a", "c"], "b", ["b"], half, ["angry", "sad"], flat, "full", "hierarchical")
    from genser.bin import score_matrix

    out = tmp_path / "RESULTS.md"
    assert score_matrix.main(["--exp_root", str(exp), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| feat | shared, flat | b | Gen-SER | 100.0 (a+c) | - | 50.0 (a) | +50.0 |" in text
    assert "| feat | a+c → b | Gen-SER | 100.0 | 50.0 | -50.0 | - | - |" in text


def test_score_matrix_without_cells_fails(tmp_path):
    from genser.bin import score_matrix

    assert score_matrix.main(["--exp_root", str(tmp_path), "--out", str(tmp_path / "R.md")]) == 1


# -------------------------------------------------------------------------- egs/cross end to end
@pytest.mark.corpus
@pytest.mark.slow
def test_cross_recipe_end_to_end(tmp_path, emodb_dir, urdu_dir):
    from test_recipe import make_recipe, run_recipe

    recipes = {name: make_recipe(tmp_path, name) for name in ("emodb", "urdu", "cross")}
    for name, corpus in (("emodb", emodb_dir), ("urdu", urdu_dir)):
        result = run_recipe(recipes[name], "--stage", "0", "--stop_stage", "0", "--corpus_dir", str(corpus))
        assert result.returncode == 0, result.stderr[-3000:]
    cross = recipes["cross"]
    small = ["--max_per_class", "6", "--train_args", "--epochs 2"]
    # Multi-corpus, full labels, hierarchical code: URDU tested on its own speaker folds.
    multi = ["--train_sets", "emodb urdu", "--test_sets", "urdu", "--label_set", "full",
             "--taxonomy", "hierarchical", *small]
    result = run_recipe(cross, "--stop_stage", "3", *multi)
    assert result.returncode == 0, result.stderr[-4000:]
    cell = cross / "data" / "emodb+urdu__urdu_full"
    data = load_data_dir(cell)
    assert collections.Counter(data.extra["corpus"].values()) == {"emodb": 42, "urdu": 24}
    urdu_folds = {data.fold[u] for u in data.utts if u.startswith("urdu_")}
    assert {data.fold[u] for u in data.utts if u.startswith("emodb_")} == {"train"}
    assert urdu_folds <= {"1", "2", "3", "4", "5"} and len(urdu_folds) >= 2
    conf = yaml.safe_load((cross / "exp" / "conf" / cell.name / "hierarchical.yaml").read_text())
    assert conf["model_conf"]["taxonomy"]["families"]["emodb_boredom"] == "boredom"
    assert conf["model_conf"]["taxonomy"]["families"]["urdu_anger"] == "angry"
    fold = sorted(urdu_folds)[0]
    result = run_recipe(cross, "--stage", "4", *multi, "--", "--folds", fold)
    assert result.returncode == 0, result.stderr[-4000:]
    exp, = (cross / "exp").glob("emotion_fbank_no_cmvn_meanstd_cnorm_hierarchical*_emodb+urdu__urdu_full")
    hyp = exp / "seed0" / "genser" / f"fold_{fold}" / "decode_nsteps1_eta0.0" / "hyp.tsv"
    header = hyp.read_text().splitlines()[0].split("\t")
    assert header[3:] == ["emodb_anger", "emodb_boredom", "emodb_disgust", "emodb_fear", "emodb_happiness",
                          "emodb_sadness", "emodb_neutral", "urdu_anger", "urdu_happiness",
                          "urdu_sadness", "urdu_neutral"]
    matrix = (cross / "exp" / "matrix" / "RESULTS.md").read_text()
    assert "## fbank_no_cmvn_meanstd_cnorm, full labels, hierarchical taxonomy" in matrix
    assert "| emodb+urdu → urdu | Gen-SER |" in matrix and "| emodb+urdu → urdu | classifier |" in matrix

    # Cross-corpus, shared classes: EmoDB's other classes are dropped and counted.
    result = run_recipe(cross, "--stage", "3", "--stop_stage", "3", "--train_sets", "emodb",
                        "--test_sets", "urdu", *small)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "dropped 6 utterance(s) of emodb label 'boredom': not in the label map" in result.stderr
    data = load_data_dir(cross / "data" / "emodb__urdu_shared")
    assert collections.Counter(data.fold.values()) == {"train": 24, "urdu": 24}
    assert data.labels("emotion") == SHARED

    # --pool mapped pools (and so extracts) only the clips the label maps send to a shared class.
    result = run_recipe(cross, "--stop_stage", "1", "--train_sets", "emodb", "--test_sets", "urdu", "--pool", "mapped",
                        *small)
    assert result.returncode == 0, result.stderr[-4000:]
    pooled = load_data_dir(cross / "data" / "all")
    emodb_labels = {pooled.emo[u] for u in pooled.utts if u.startswith("emodb_")}
    assert emodb_labels == {"anger", "happiness", "neutral", "sadness"}
    assert "not pooled, no shared class: boredom disgust fear" in result.stderr

    # A missing corpus data dir names the command that makes it.
    result = run_recipe(cross, "--corpora", "emodb urdu", "--egs_dir", str(tmp_path / "nowhere"), "--stop_stage", "1")
    assert result.returncode != 0 and "./run.sh --stage 0 --stop_stage 0" in result.stderr
