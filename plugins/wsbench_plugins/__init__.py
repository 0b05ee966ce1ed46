"""wsbench's built-in plugins: each module implements wsbench hooks through the public ``wsbench`` API
alone, like a third-party plugin, and ``wsbench.plugins.DEFAULT_PLUGINS`` registers them all first."""
