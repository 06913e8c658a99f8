r"""TODO: exports are wired once the modules land."""
