"""The demo tells the truth: a labelled held-out test set sits beside the demo folder and is readable."""

from __future__ import annotations

import pytest

from comet_studio.app.context import AppContext
from comet_studio.app.jobs import JobRegistry
from comet_studio.app.main import _demo_folder, _demo_test_folder
from comet_studio.app.paths import PathError, user_path
from comet_studio.core.data import load_mvtec

pytest.importorskip("elpv_dataset")


def test_the_demo_comes_with_a_labelled_test_set_the_test_tab_may_read(tmp_path):
    demo = _demo_folder(tmp_path)
    test_set = _demo_test_folder(tmp_path, demo)
    data = load_mvtec(test_set)
    assert 0 < sum(i.label for i in data.test) < len(data.test)  # both classes: AUROC and a ROC curve
    ctx = AppContext(runs_dir=tmp_path, registry=JobRegistry(), default_folder=demo, data_roots=[],
                     demo_test_folder=test_set)
    assert user_path(test_set, kind="any", roots=ctx.roots(None)).samefile(test_set)
    bare = AppContext(runs_dir=tmp_path, registry=JobRegistry(), default_folder=demo, data_roots=[])
    with pytest.raises(PathError):  # readable because it is the demo's, not by accident
        user_path(test_set, kind="any", roots=bare.roots(None))
    assert _demo_test_folder(tmp_path, "") == ""
