"""``slicemesh demo``: a simulated cluster, example slices created and shown, then a clean stop.

With the ``sim`` backend (the default) one slice (examples/cdn-probe.yaml) across 24 simulated
machines shows placement; with ``--backend real`` every simulated machine runs real runc
containers and QEMU VMs, so the demo creates one container slice (examples/pair.yaml) and one
VM slice (examples/vm-pair.yaml), shows where each runs and the first lines each sliver wrote,
then deletes them.
"""

from __future__ import annotations

import time
from pathlib import Path

from slices import cliinput, render
from slices.cli import wait_settled
from slices.client import Client
from slices.protocol import CreateSlice, DeleteSlice, ListNodes, ListSites, SliverLogs
from slices.spec import load_spec_text
from slices.wire import to_wire
from slices.yamlio import load_yaml

EXAMPLES = Path(__file__).resolve().parent / "examples"  # shipped in the package; ./examples links here
#: What each backend's demo creates when no ``--spec`` is given.
DEFAULT_SPECS = {"sim": ("cdn-probe.yaml",), "real": ("pair.yaml", "vm-pair.yaml")}
DEFAULT_NODES = {"sim": 24, "real": 4}
#: A VM boots in seconds of CPU under TCG (several at once on a small host): more than a container.
SETTLE_S = {"container": 60.0, "vm": 240.0}


def first_output(c: Client, name: str, node: str, timeout: float = 30.0) -> str:
    """The first lines a running sliver wrote (they come a moment after it starts)."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.strip() and time.monotonic() < deadline:
        data = c.call(SliverLogs(slice=name, node=node, offset=0, limit=4096)).data
        time.sleep(0.2)
    lines = data.decode(errors="replace").splitlines()[:3]
    return "\n".join(f"    {line}" for line in lines) or "    (nothing yet)"


def run(*, backend: str, nodes: int | None, spec: str | None, timeout: float) -> int:
    from slices.simcluster import SimCluster

    paths = [Path(spec)] if spec else [EXAMPLES / name for name in DEFAULT_SPECS[backend]]
    texts = [cliinput.read_spec(str(p)) for p in paths]
    specs = [load_spec_text(t, str(p)) for t, p in zip(texts, paths, strict=True)]
    cluster = SimCluster(nodes=nodes or DEFAULT_NODES[backend], backend=backend)
    print(f"starting a simulated cluster of {len(cluster.nodes)} machines ({backend} backend) ...", flush=True)
    try:
        url = cluster.start()
        print(f"controller: {url}\n")
        with cluster.client(timeout=timeout) as c:
            print(render.sites_text(to_wire(c.call(ListSites()).sites)) + "\n")
            if backend == "real":
                print(render.nodes_text(to_wire(c.call(ListNodes(rows="arrays")).nodes)) + "\n")
            for s, text, path in zip(specs, texts, paths, strict=True):
                print(f"creating slice {s.name!r} ({s.isolation}) from {path} ...", flush=True)
                t0 = time.monotonic()
                c.call(CreateSlice(spec=load_yaml(text)))
                result = wait_settled(c, s.name, SETTLE_S.get(s.isolation, 60.0))
                print(f"slice {s.name} is {result['state']} after {time.monotonic() - t0:.2f} s\n")
                print(render.slice_text(result))
                if backend == "real":
                    for v in result["slivers"]:
                        if v["state"] == "running":
                            print(f"\n  first output of its sliver on {v['node']}:\n{first_output(c, s.name, v['node'])}")
                print()
            for s in specs:
                c.call(DeleteSlice(name=s.name))
            print(f"deleted slice{'s' if len(specs) > 1 else ''} {', '.join(s.name for s in specs)}; stopping the cluster")
    finally:
        cluster.stop()
    return 0
