"""The one way wsbench and its plugins call ``torch.compile``."""
from __future__ import annotations

import torch


def compile_fn(fn, **kwargs):
    """``torch.compile(fn, **kwargs)``, with inductor compiling in this process.

    Inductor's compile-worker pool hung for its full 300 s shutdown timeout at interpreter exit after
    every grid on the H100 (torch 2.11); compiling in-process avoids that and costs little, since
    wsbench compiles a few small graphs once per process.
    """
    import torch._inductor.config as inductor_config
    inductor_config.compile_threads = 1
    return torch.compile(fn, **kwargs)
