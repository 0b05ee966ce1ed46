"""wsbench's built-in plugins, loaded through the ``wsbench`` entry-point group like any other."""
