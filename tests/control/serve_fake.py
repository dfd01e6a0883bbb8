"""``python -m tests.control.serve_fake serve ...``: the serve command on the fake runtime.

The same path as ``python -m voxline serve`` (flags, config, logging, uvloop,
binding, signals, draining), with FakeRuntime in place of the model-loading one.
"""

from __future__ import annotations

import sys

from voxline.cli import build_parser, serve_command

from .fakes import FakeRuntime

if __name__ == "__main__":
    sys.exit(serve_command(build_parser().parse_args(sys.argv[1:]), FakeRuntime))
