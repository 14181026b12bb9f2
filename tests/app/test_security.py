"""Only the runs folder and Gradio's temp folder are served; paths and run ids from clients are checked."""

from __future__ import annotations

import zipfile
from urllib.parse import quote

import httpx
import pytest

from comet_studio.app.paths import PathError, resolve_run, save_uploads, user_path
from tests.app.conftest import train

# pandas deprecation noise from inside gradio's queue, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


def _get_file(url: str, path: str) -> httpx.Response:
    return httpx.get(f"{url.rstrip('/')}/gradio_api/file={quote(path)}", timeout=10)


def test_files_outside_the_allowed_folders_are_refused(studio, tmp_path_factory):
    secret = tmp_path_factory.mktemp("secret") / "secret.txt"
    secret.write_text("do not serve")
    assert _get_file(studio.url, str(secret)).status_code == 403
    assert _get_file(studio.url, "/etc/passwd").status_code == 403
    # A '..' escape from the allowed runs folder into its parent.
    escape = f"{studio.runs_dir}/../{secret.parent.name}/{secret.name}"
    response = _get_file(studio.url, escape)
    assert response.status_code in (400, 403, 404) and "do not serve" not in response.text
    # The training images themselves are not served either (the page shows cached thumbnails).
    image = next(studio.folder.iterdir())
    assert _get_file(studio.url, str(image)).status_code == 403


def test_files_in_the_runs_folder_are_served(studio):
    served = studio.runs_dir / ".cache" / "probe.txt"
    served.parent.mkdir(parents=True, exist_ok=True)
    served.write_text("ok")
    assert _get_file(studio.url, str(served)).status_code == 200


def test_api_refuses_paths_that_are_not_a_runs_samples(client, studio):
    from gradio_client.exceptions import AppError

    run_id = train(client, studio.folder, rounds=1)["run_id"]
    for bad_run in ("../..", "/etc", f"{run_id}/../..", "20250101-120000-zzzzzz"):
        with pytest.raises(AppError, match="run id|not found"):
            client.predict(bad_run, api_name="/run_samples")
    with pytest.raises(AppError, match="is not a training image"):
        client.predict(run_id, "/etc/passwd", "good", api_name="/set_override")
    with pytest.raises(AppError, match="is not a training image"):
        client.predict(run_id, f"{studio.folder}/../{studio.folder.name}/x.jpg", "exclude", api_name="/set_override")
    with pytest.raises(AppError, match="'..'"):
        client.predict(f"{studio.folder}/../{studio.folder.name}", api_name="/start_training")


def test_typed_paths_and_run_ids_are_checked(tmp_path):
    with pytest.raises(PathError, match="'..'"):
        user_path(f"{tmp_path}/../{tmp_path.name}")
    with pytest.raises(PathError, match="does not exist"):
        user_path(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PathError, match="is a file"):
        user_path(str(tmp_path / "file.txt"))
    assert user_path(f"  '{tmp_path}'  ") == tmp_path
    with pytest.raises(PathError, match="not a run id"):
        resolve_run(tmp_path, "../etc")


def test_uploaded_zip_cannot_write_outside_its_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escaped.png", b"not really a png")
    with pytest.raises(PathError, match="outside the archive"):
        save_uploads([str(archive)], tmp_path / "uploads")
    assert not (tmp_path / "escaped.png").exists()


def test_uploads_are_copied_and_unpacked(tmp_path):
    from tests.conftest import good_tiles

    tiles = good_tiles(3)
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tiles[0], f"sub/{tiles[0].name}")
        zf.write(tiles[1], tiles[1].name)
        zf.writestr("notes.txt", "not an image")
    folder = save_uploads([str(archive), str(tiles[2])], tmp_path / "uploads")
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert found == sorted([f"batch/sub/{tiles[0].name}", f"batch/{tiles[1].name}", tiles[2].name])
    text = tmp_path / "readme.txt"
    text.write_text("x")
    with pytest.raises(PathError, match="no images"):
        save_uploads([str(text)], tmp_path / "uploads")
