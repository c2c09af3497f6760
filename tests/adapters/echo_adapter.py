"""An adapter for the ``isolate=process`` tests, loaded by a real entry point (``echo =
tests.adapters.echo_adapter:EchoAdapter``, declared by a dist-info the test writes).

It says where it runs (a log line with its pid), prints junk to stdout (which must not reach the frame
pipe), then, for every catalog view it is sent, imports into group ``echo`` one service per service of the
pool's own groups (id ``<group>.<id>``, the same addr): so a test sees views go to the child and imports
come back."""

from __future__ import annotations

import os

from registry.adapters.base import AdapterContext, ExternalService


class EchoAdapter:
    def __init__(self) -> None:
        self.name = "echo"

    async def run(self, ctx: AdapterContext) -> None:
        print("junk on stdout: must not reach the frames", flush=True)
        ctx.log.warning("echo adapter running in pid %d", os.getpid())
        async for view in ctx.exports():
            ctx.imports.replace_all([ExternalService("echo", f"{s.group}.{s.id}", s.addr)
                                     for s in view.services if s.group != "echo"])
