"""The benchmark grid (contamination x method on real magnetic-tile images) and the speed benchmark."""

from __future__ import annotations

import json
import math

import pytest

from comet_studio.cli.main import main
from comet_studio.workflows.bench import (BenchConfig, SpeedConfig, cap_train, find_categories, read_results, run_bench,
                                     speed_bench)
from comet_studio.workflows.bench.features import cache_path
from comet_studio.workflows.bench.grid import Cell, cell_configs
from comet_studio.core.data import load_mvtec
from comet_studio.core.model import AnomalyModel
from comet_studio.core.detectors.registry import DEFAULT_DETECTOR
from comet_studio.core.quality import QUALITY
from tests.conftest import TINY, good_tiles

GRID = dict(models=("simplenet",), noise=(0.0, 0.2), methods=("baseline", "comet"), seeds=(0,), image_size=TINY,
            rounds=2, steps_per_round=2, device="cpu")


class _Counter:
    """Counts AnomalyModel.fit/extract calls (and can make fit fail for one method)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_method_refine: bool = False) -> None:
        self.fits = 0
        self.extracts = 0
        fit, extract = AnomalyModel.fit, AnomalyModel.extract

        def counting_fit(model, *args, **kwargs):
            self.fits += 1
            if fail_method_refine and model.train_config.comet.refine:
                raise RuntimeError("injected failure")
            return fit(model, *args, **kwargs)

        def counting_extract(model, *args, **kwargs):
            self.extracts += 1
            return extract(model, *args, **kwargs)

        monkeypatch.setattr(AnomalyModel, "fit", counting_fit)
        monkeypatch.setattr(AnomalyModel, "extract", counting_extract)


@pytest.fixture(scope="module")
def bench(tiny_mvtec, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        counter = _Counter(mp)
        result = run_bench(tiny_mvtec, out, BenchConfig(**GRID))
    return result, counter, tiny_mvtec


def test_results_csv_has_one_finite_row_per_cell(bench):
    result, counter, _ = bench
    rows = read_results(result.out_dir / "results.csv")
    assert len(rows) == 4 and counter.fits == 4 and result.computed == 4 and result.failed == 0
    assert {(r["method"], r["noise"]) for r in rows} == {(m, n) for m in GRID["methods"] for n in GRID["noise"]}
    for row in rows:
        assert row["error"] == "" and row["category"] == "tile" and row["model"] == "simplenet"
        for metric in ("image_auroc", "pixel_auroc", "aupro", "f1_max"):
            assert 0.0 <= row[metric] <= 1.0, (metric, row)
        assert row["fit_seconds"] > 0
    planted = {r["noise"]: r["n_planted"] for r in rows}
    assert planted == {0.0: 0, 0.2: 3}  # round(0.2 * 16) anomalies moved into the 16 clean train images
    noisy = [r for r in rows if r["noise"] == 0.2]
    assert all(r["n_train"] == 19 and r["n_test"] == 9 for r in noisy)
    assert all(0.0 <= r["planted_in_lowest"] <= 1.0 and 0 <= r["rejection_recall"] <= 1 for r in noisy)


def test_markdown_table_and_charts_are_written(bench):
    result, _, _ = bench
    text = result.report.markdown.read_text()
    assert "| model | method | protocol | noise | seeds | image AUROC" in text
    detail = text[text.index("every metric"):]
    assert sum(line.startswith("| simplenet |") for line in detail.splitlines()) == 4
    # The summary pivots (one row per model + method, one column per noise) hold the same means.
    pivot = text[text.index("### tile, move protocol: image AUROC"):].splitlines()
    assert pivot[2] == "| model | method | noise 0 | noise 0.2 |"
    rows = read_results(result.out_dir / "results.csv")
    for line in pivot[4:6]:
        _, model, method, *cells, _ = (c.strip() for c in line.split("|"))
        expected = {r["noise"]: r["image_auroc"] for r in rows if r["method"] == method}
        assert [float(c) for c in cells] == [round(expected[n], 3) for n in (0.0, 0.2)], line
    assert "no test labels" in text
    assert result.report.html and all(p.exists() for p in result.report.html)
    # PNG needs Chromium for kaleido: either written, or the reason is recorded (never a crash).
    assert (result.report.png and all(p.exists() for p in result.report.png)) or result.report.png_error


def test_planted_files_are_recorded_and_disjoint_from_test_under_move(bench):
    result, _, root = bench
    anomalies = {i.path for i in load_mvtec(root).test if i.label == 1}
    for method in GRID["methods"]:
        record = json.loads((result.out_dir / "cells" / "tile" / f"simplenet_{method}_move_noise0.2_seed0.json")
                            .read_text())
        planted, test = set(record["planted"]), set(record["test"])
        assert len(planted) == 3 and planted <= anomalies
        assert not planted & test
        assert record["cell"]["image_auroc"] == pytest.approx(
            next(r for r in result.rows if r["method"] == method and r["noise"] == 0.2)["image_auroc"])
    # Same (noise, seed) -> the same planted files for every method: paired comparisons.
    records = [json.loads(p.read_text())["planted"] for p in (result.out_dir / "cells" / "tile").glob("*noise0.2*")]
    assert all(r == records[0] for r in records)


def test_resume_skips_finished_cells_and_reuses_cached_features(bench, monkeypatch):
    result, _, root = bench
    before = {(r["method"], r["noise"]): r["finished"] for r in read_results(result.out_dir / "results.csv")}
    counter = _Counter(monkeypatch)
    again = run_bench(root, result.out_dir, BenchConfig(**GRID), png=False)
    assert counter.fits == 0 and counter.extracts == 0 and again.computed == 0 and again.reused == 4
    assert {(r["method"], r["noise"]): r["finished"] for r in again.rows} == before
    # A grown grid runs only its new cell (baseline at 0.1), still without re-extracting features.
    grown = run_bench(root, result.out_dir, BenchConfig(**{**GRID, "noise": (0.0, 0.1, 0.2), "methods": ("baseline",)}),
                      png=False)
    assert counter.fits == 1 and counter.extracts == 0 and grown.computed == 1 and grown.reused == 2
    assert len(grown.rows) == 5  # the report covers every row of the folder


def test_cli_bench_reuses_the_same_folder(bench, capsys):
    result, _, root = bench
    code = main(["bench", str(root), "--out", str(result.out_dir), "--models", "simplenet", "--noise", "0,0.2",
                 "--methods", "baseline,comet",
                 "--image-size", str(TINY), "--rounds", "2", "--steps", "2", "--device", "cpu", "--no-png"])
    printed = capsys.readouterr().out
    assert code == 0 and "0 cell(s) run now" in printed and "| simplenet | comet |" in printed


def test_other_settings_in_the_same_folder_are_refused(bench):
    result, _, root = bench
    with pytest.raises(ValueError, match="new --out folder"):
        run_bench(root, result.out_dir, BenchConfig(**{**GRID, "image_size": 96}))


def test_model_settings_reach_every_cell_and_the_feature_cache_and_bad_ones_are_named(bench, capsys):
    result, _, root = bench
    layers = ["block4", "block10", "block15"]
    config = BenchConfig(**GRID, model_settings=(("backbone.layers", layers), ("simplenet.noise_std", 0.5)))
    model, _ = cell_configs(Cell("tile", "simplenet", "trust", 0.2, 0, "overlap"), config)
    assert model.backbone.layers == tuple(layers) and model.simplenet.noise_std == 0.5
    assert config.backbone_config().layers == tuple(layers)  # so the features are cached apart
    assert cache_path(result.out_dir, "tile", config.backbone_config()) != \
        cache_path(result.out_dir, "tile", BenchConfig(**GRID).backbone_config())
    with pytest.raises(ValueError, match="new --out folder"):  # another setting, another folder
        run_bench(root, result.out_dir, config)
    with pytest.raises(ValueError, match="has no setting 'noise'"):
        BenchConfig(model_settings=(("simplenet.noise", 0.5),))
    assert main(["bench", str(root), "--out", str(result.out_dir), "--set", "simplenet.noise_std"]) != 0
    assert "expected SECTION.KEY=VALUE" in capsys.readouterr().err


def test_failed_cell_is_recorded_the_rest_go_on_and_a_rerun_retries_it(tiny_mvtec, tmp_path, monkeypatch):
    config = BenchConfig(**{**GRID, "noise": (0.2,), "methods": ("baseline", "refine")})
    with monkeypatch.context() as mp:
        _Counter(mp, fail_method_refine=True)
        first = run_bench(tiny_mvtec, tmp_path, config, png=False)
    rows = {r["method"]: r for r in first.rows}
    assert first.failed == 1 and rows["refine"]["error"] == "RuntimeError: injected failure"
    assert math.isnan(rows["refine"]["image_auroc"]) and rows["baseline"]["error"] == ""
    assert "injected failure" in first.report.markdown.read_text()
    planted = json.loads((tmp_path / "cells" / "tile" / "simplenet_refine_move_noise0.2_seed0.json").read_text())
    assert len(planted["planted"]) == 3  # recorded even though training failed
    counter = _Counter(monkeypatch)
    second = run_bench(tiny_mvtec, tmp_path, config, png=False)
    assert counter.fits == 1 and second.failed == 0 and all(r["error"] == "" for r in second.rows)


def test_categories_and_train_cap(tiny_mvtec):
    assert find_categories(tiny_mvtec) == {"tile": tiny_mvtec.resolve()}
    assert find_categories(tiny_mvtec.parent, ("tile",)) == {"tile": tiny_mvtec.resolve()}
    with pytest.raises(ValueError, match="not found"):
        find_categories(tiny_mvtec.parent, ("bottle",))
    with pytest.raises(ValueError, match="unknown method"):
        BenchConfig(methods=("comet", "magic"))
    capped = cap_train(load_mvtec(tiny_mvtec), 8)
    assert len(capped.train) == 8 and capped == cap_train(load_mvtec(tiny_mvtec), 8)


def test_speed_bench_returns_positive_numbers_and_reports_progress():
    heard: list[tuple[str, int, int]] = []
    result = speed_bench(good_tiles(8), SpeedConfig(backbones=("efficientnet-lite0", "wide_resnet50_2"),
                                                    image_size=TINY, device="cpu", n_images=8, rounds=1,
                                                    steps_per_round=2, repeats=1, presets=("fast",)),
                         progress=lambda stage, done, total: heard.append((stage, done, total)))
    stages = {stage for stage, _, _ in heard}
    # the extraction, the SimpleNet fit (the trust opinion, its rounds) and the memory's leave-one-out pass
    assert {"features", "trust", "rounds"} <= stages and any(s.startswith("memory") for s in stages), stages
    assert all(stage == "features" or done <= total for stage, done, total in heard)
    assert result["device"] == "cpu" and result["torch_threads"] >= 1
    lite0 = result["backbones"]["efficientnet-lite0"]
    for key in ("extract_images_per_second", "simplenet_comet_seconds_per_round",
                "inference_images_per_second_batch1", "inference_images_per_second_batch16"):
        assert lite0[key] > 0, key
    for key in ("memory_fit_seconds", "memory_exact_fit_seconds", "memory_inference_images_per_second_batch16",
                "memory_exact_inference_images_per_second_batch16"):
        assert lite0[key] > 0, key
    wrn = result["backbones"]["wide_resnet50_2"]
    assert "unavailable" in wrn or wrn["extract_images_per_second"] > 0
    fast = result["presets"]["fast"]  # the preset as `train --quality fast` runs it: the default detector
    assert set(result["presets"]) == {"fast"} and fast["detector"] == DEFAULT_DETECTOR
    assert fast["n_memories"] == QUALITY["fast"].memories
    for key in ("train_seconds", "fit_seconds", "inference_images_per_second_batch1",
                "inference_images_per_second_batch16"):
        assert fast[key] > 0, key
    with pytest.raises(ValueError, match="unknown preset"):
        SpeedConfig(presets=("turbo",))


def test_cli_speed_bench_writes_its_report(tiny_mvtec, tmp_path, capsys):
    code = main(["bench", "--speed", str(tiny_mvtec), "--out", str(tmp_path), "--backbones", "efficientnet-lite0",
                 "--image-size", str(TINY), "--speed-images", "8", "--rounds", "1", "--steps", "2",
                 "--speed-skip-exact", "--speed-presets", "default", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "| efficientnet-lite0 |" in out and f"| default | {DEFAULT_DETECTOR} |" in out
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["backbones"]["efficientnet-lite0"]["memory_fit_seconds"] > 0
    assert (tmp_path / "speed.md").read_text().startswith("# CoMet Studio speed")
