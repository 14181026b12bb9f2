"""Peers in the bench (``--peers anomalib``): the message without the extra (always runs), and anomalib's
PatchCore and PaDiM on a tiny real category through the CLI (runs whenever anomalib is importable)."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
import torch

from comet_studio.cli.main import main
from comet_studio.workflows.bench import read_results
from comet_studio.workflows.bench.anomalib_peer import PeersUnavailableError
from comet_studio.workflows.bench.peers import check_peers, read_peer_rows
from tests.conftest import TINY

HAVE_ANOMALIB = importlib.util.find_spec("anomalib") is not None
needs_anomalib = pytest.mark.skipif(not HAVE_ANOMALIB, reason='anomalib is not installed (the optional extra: '
                                    'pip install -e ".[peers]"); CI does not install it')
PEER_MODELS = ("anomalib-patchcore", "anomalib-padim")
ARGS = ["--noise", "0.25", "--protocol", "overlap", "--models", "simplenet", "--methods", "baseline", "--seeds", "0",
        "--image-size", str(TINY), "--rounds", "1", "--steps", "2", "--device", "cpu", "--no-png"]


def test_without_the_extra_peers_say_how_to_install(monkeypatch, tiny_mvtec, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "anomalib", None)  # what `import anomalib` meets when it is not installed
    with pytest.raises(PeersUnavailableError, match=r'pip install -e "\.\[peers\]"'):
        check_peers(("anomalib",))
    out = tmp_path / "bench"
    assert main(["bench", str(tiny_mvtec), "--out", str(out), *ARGS, "--peers", "anomalib"]) == 2
    error = capsys.readouterr().err
    assert "needs anomalib 2.7.0" in error and 'pip install -e ".[peers]"' in error
    assert not out.exists()  # refused before any cell ran


def test_an_unknown_peer_is_refused():
    with pytest.raises(ValueError, match="unknown peer"):
        check_peers(("pyod",))


@pytest.fixture(scope="module")
def peer_bench(tiny_mvtec, tmp_path_factory):
    out = tmp_path_factory.mktemp("peers")
    assert main(["bench", str(tiny_mvtec), "--out", str(out), *ARGS, "--peers", "anomalib"]) == 0
    return out


@needs_anomalib
def test_peer_rows_share_the_cell_and_our_metrics(peer_bench):
    rows = {r["model"]: r for r in read_results(peer_bench / "results.csv")}
    ours = rows["simplenet"]
    for name in PEER_MODELS:
        row = rows[name]
        assert row["error"] == "" and row["method"] == "baseline" and row["protocol"] == "overlap"
        # The same contaminated training folder and test set as the grid's cell: 16 clean + 4 planted copies.
        assert (row["n_train"], row["n_planted"], row["n_test"]) == (ours["n_train"], ours["n_planted"],
                                                                     ours["n_test"]) == (20, 4, 12)
        for metric in ("image_auroc", "pixel_auroc", "aupro", "f1_max"):
            assert 0.0 <= row[metric] <= 1.0, (name, metric, row[metric])
        assert row["fit_seconds"] > 0 and row["predict_images_per_second"] > 0


@needs_anomalib
def test_speed_ratios_come_from_the_same_run(peer_bench):
    results = {r["model"]: r for r in read_results(peer_bench / "results.csv")}
    peers = read_peer_rows(peer_bench / "peers.csv")
    assert sorted(p["model"] for p in peers) == sorted(PEER_MODELS)
    timed = {p["ours_fit_seconds"] for p in peers}
    assert len(timed) == 1  # one fit of our default per cell, timed against both peers
    for peer in peers:
        assert peer["error"] == "" and peer["threads"] == torch.get_num_threads() and peer["device"] == "cpu"
        assert peer["fit_speedup"] == pytest.approx(peer["fit_seconds"] / peer["ours_fit_seconds"])
        assert peer["predict_speedup"] == pytest.approx(peer["ours_predict_images_per_second"]
                                                        / peer["predict_images_per_second"])
        assert peer["fit_seconds"] == pytest.approx(results[peer["model"]]["fit_seconds"])
        # anomalib's own AUROC on the same scores equals ours: the predictions were taken over intact.
        assert peer["anomalib_image_auroc"] == pytest.approx(results[peer["model"]]["image_auroc"], abs=1e-6)
        assert 0.0 <= peer["ours_image_auroc"] <= 1.0
    text = (peer_bench / "peers.md").read_text()
    assert "anomalib-patchcore" in text and "fit speed-up" in text
    assert "anomalib-padim" in (peer_bench / "results.md").read_text()


@needs_anomalib
def test_a_second_run_skips_finished_peer_cells(peer_bench, tiny_mvtec):
    before = read_peer_rows(peer_bench / "peers.csv")
    assert main(["bench", str(tiny_mvtec), "--out", str(peer_bench), *ARGS, "--peers", "anomalib"]) == 0
    after = read_peer_rows(peer_bench / "peers.csv")
    assert [r["finished"] for r in after] == [r["finished"] for r in before]


@needs_anomalib
def test_the_peer_backbone_is_our_efficientnet_lite0(tiny_mvtec):
    from comet_studio.workflows.bench.anomalib_peer import build_peer, lite0_timm_state
    from comet_studio.core.data.transforms import load_resized, to_tensor
    from comet_studio.core.features import build_backbone

    image = to_tensor([load_resized(next((tiny_mvtec / "train" / "good").iterdir()), TINY)])
    peer = build_peer("anomalib-patchcore", lite0_timm_state(), image_size=TINY, seed=0, device=torch.device("cpu"))
    theirs = peer.model.feature_extractor(peer.pre_processor(image))
    ours = build_backbone("efficientnet-lite0").eval()
    with torch.no_grad():
        stride8, stride16 = ours((image - 0.5) / 0.5, ours.default_layers)
    assert np.allclose(theirs["blocks.2"].numpy(), stride8.numpy(), atol=1e-5)
    assert np.allclose(theirs["blocks.4"].numpy(), stride16.numpy(), atol=1e-5)
    assert not math.isnan(float(theirs["blocks.4"].abs().sum()))


def test_readme_peer_tables_match_the_raw_rows():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[4] / "docs" / "results" / "peers_tables.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, ("README.md's anomalib tables differ from docs/results/cpu_bench_*/{results,peers}"
                                  f".csv: run `python docs/results/peers_tables.py`\n{done.stderr}")
