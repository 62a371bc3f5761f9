"""The test run keeps napari's settings (reader preferences cytoreview writes on every open) off the user's file."""

import os


def test_napari_settings_of_a_test_run_live_in_the_runs_own_config_folder():
    from napari.settings import get_settings

    path = os.path.realpath(str(get_settings().config_path))
    assert path.startswith(os.path.realpath(os.environ["XDG_CONFIG_HOME"]) + os.sep), path
