"""nc_tui: the nc-tui command (terminal UI and headless console) over nc_engine."""
