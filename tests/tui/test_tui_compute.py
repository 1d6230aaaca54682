"""The set-up form's [compute] fields: chosen in the form, kept in the config the scan gets."""

import pytest
from textual.widgets import Input, Select

from nc_engine.config.settings import config_from_dict
from nc_tui.app import NCApp
from tests.tui.test_tui import type_into


@pytest.mark.asyncio
async def test_compute_fields_reach_the_config(tmp_path):
    cfg = config_from_dict(
        {"model": {"path": "m.pt", "input_shape": [1, 8, 8]}, "compute": {"devices": [0, 1]}},
        source="c.toml",
        base_dir=tmp_path,
    )
    app = NCApp(config=cfg, mode="setup")
    async with app.run_test(size=(100, 40)) as pilot:
        backend = app.screen.query_one("#compute-backend", Select)
        assert backend.value == "local"
        backend.value = "ray"
        await pilot.pause()
        await type_into(pilot, app, "#compute-workers", "3")
        await type_into(pilot, app, "#compute-address", "auto")
        assert app.screen.query_one("#compute-address", Input).value == "auto"
        # devices lists local GPUs, which a cluster address cannot use: the form says so in one line
        with pytest.raises(Exception, match=r"\[compute\].devices lists local GPUs"):
            app.screen.form_config()
        await type_into(pilot, app, "#compute-address", "")
        got = app.screen.form_config().compute
        assert (got.backend, got.workers, got.address, got.devices) == ("ray", 3, "", [0, 1])  # devices kept
