"""The EmoDB recipe end to end on the real corpus in ../shared (skipped where it is absent).

Small settings: the recipe's fbank_no_cmvn utterance statistics, 2 of the 10
leave-one-speaker-out folds, a few epochs; the full 10-fold record is egs/emodb/RESULTS.md.
"""
import pytest

from test_recipe import exp_of, make_recipe, run_recipe

pytestmark = [pytest.mark.corpus, pytest.mark.slow]

EMOTIONS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
FOLD_SIZES = {"03": 49, "08": 58}  # test utterances of speakers 03 and 08 (EmoDB's counts)


@pytest.fixture(scope="module")
def emodb_recipe(tmp_path_factory, emodb_dir):
    recipe = make_recipe(tmp_path_factory.mktemp("emodb"), "emodb")
    result = run_recipe(recipe, "--corpus_dir", str(emodb_dir), "--folds", "03 08", "--nj", "2",
                        "--train_nj", "2", "--train_args", "--epochs 6", "--nsteps", "1 3")
    assert result.returncode == 0, result.stderr[-4000:]
    return recipe


def read_hyp(path):
    header, *rows = path.read_text().splitlines()
    assert header.split("\t")[:3] == ["utt", "ref", "hyp"]
    return [row.split("\t") for row in rows]


def test_data_prep_counts_and_folds(emodb_recipe):
    data = emodb_recipe / "data" / "all"
    assert (data / "labels.emo").read_text().split() == EMOTIONS
    counts = (data / "counts").read_text()
    assert "535" in counts
    folds = dict(line.split() for line in (data / "utt2fold").read_text().splitlines())
    spk = dict(line.split() for line in (data / "utt2spk").read_text().splitlines())
    assert len(folds) == 535 and folds == spk  # leave-one-speaker-out: the fold is the speaker
    gender = dict(line.split() for line in (data / "utt2gender").read_text().splitlines())
    assert {gender[u] for u in gender if spk[u] == "03"} == {"m"}
    assert {gender[u] for u in gender if spk[u] == "08"} == {"f"}


def test_folds_are_decoded_and_scored(emodb_recipe):
    exp = exp_of(emodb_recipe, "emotion_*_epochs6")
    assert (exp / "folds.txt").read_text().split() == list(FOLD_SIZES)
    correct = total = 0
    for fold, size in FOLD_SIZES.items():
        for setting in ("genser/fold_{}/decode_nsteps1_eta0.0", "genser/fold_{}/decode_nsteps3_eta0.0",
                        "classifier/fold_{}/decode_argmax"):
            rows = read_hyp(exp / "seed0" / setting.format(fold) / "hyp.tsv")
            assert len(rows) == size
            assert all(r[0][:2] == fold for r in rows)  # only the held-out speaker is tested
            correct += sum(r[1] == r[2] for r in rows)
            total += len(rows)
    # Six epochs on 9 training speakers: far from converged, but well above 1/7 chance.
    assert correct / total > 0.3
    results = (exp / "RESULTS.md").read_text()
    assert "genser" in results and "classifier" in results


def test_gender_task_reuses_the_features(emodb_recipe):
    result = run_recipe(emodb_recipe, "--stage", "2", "--task", "gender", "--folds", "03",
                        "--train_args", "--epochs 2")
    assert result.returncode == 0, result.stderr[-4000:]
    exp = exp_of(emodb_recipe, "gender_*_epochs2")
    assert (exp / "labels.txt").read_text().split() == ["f", "m"]
    rows = read_hyp(exp / "seed0" / "classifier" / "fold_03" / "decode_argmax" / "hyp.tsv")
    assert len(rows) == FOLD_SIZES["03"] and {r[1] for r in rows} == {"m"}
    assert "Stage 1" not in result.stderr  # stage 1 output is reused, not recomputed
