"""The daily publish task: a new signed bundle only when one is due."""

import time

import pytest
from fleetroom.agents import tasks
from fleetroom.agents.bundles import bundle_dir, latest_bundle
from fleetroom_profiles import shipped_profile_dir
from fleetroom_profiles.bundle import files_from_directory


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "server-data"
    settings.DATA_DIR.mkdir()
    return settings.DATA_DIR


def test_publishes_first_then_only_when_due(data_dir):
    assert latest_bundle() is None
    assert tasks.do_publish_profiles_if_due() == 1
    stored = latest_bundle()
    assert stored is not None
    assert stored.version == 1
    # The bundle holds exactly the shipped profile files.
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(stored.read())) as zf:
        names = {n for n in zf.namelist() if n != "manifest.json"}
    assert names == set(files_from_directory(shipped_profile_dir()))
    # Nothing changed, a day later: no new bundle.
    assert tasks.do_publish_profiles_if_due(time.time() + 86400) is None
    # A week later: a fresh one, so agents stay far from expiry.
    assert tasks.do_publish_profiles_if_due(time.time() + 8 * 86400) == 2


def test_changed_profiles_publish_at_once(data_dir):
    assert tasks.do_publish_profiles_if_due() == 1
    (bundle_dir() / "source.sha256").write_text("from an older server release\n")
    assert tasks.do_publish_profiles_if_due() == 2
    assert tasks.do_publish_profiles_if_due() is None
