"""What one node's slivers share, whatever backend runs them: made once, handed to every backend.

A node may run containers (runc) and VMs (QEMU) side by side. They must sit on one bridge and
draw addresses from one pool (so a container can reach a VM of the same node), and live under
one cgroup capped at the node's declared capacity (so both kinds together never exceed what
the node advertises). So none of that belongs to a backend; each real backend receives this
object in its constructor and asks it for what a sliver needs:

* ``addresses``: the address pool (addresses.py), persisted in the agent's state directory;
* ``net``: the bridge and its subnet, a container's netns + veth (``setup``/``teardown``,
  with one pair kept ready) and a VM's TAP (``setup_tap``/``teardown_tap``) (netdev.py),
  behind the bridge's firewall: what any sliver may reach on this host (firewall.py);
* ``slicenet``: which slivers of this and other nodes share a slice with ours (slicenet.py):
  ``set_slices`` fills the firewall's per-slice sets, ``etc_files`` gives a sliver's
  /etc/hosts and resolv.conf; ``nat``: slivers reach the world masqueraded (``sliver_nat``);
* ``host_id(address)``: the first host uid/gid of a sliver's own range, or None when slivers
  run without user namespaces (userns.py); the range follows the address;
* ``cg``: the node cgroup ``/<prefix>/<node>`` capped at capacity and the leaves below it:
  runc makes a container's from ``cgroup_path``; a VM's QEMU gets one from
  ``cg.create_leaf(key, machine.limits(...))``, ``cg.join(key, pid)``, ``cg.remove_leaf``;
  ``cg.usage(key)`` reads either (cgroups.py, numbers from cgroup_limits.py);
* ``disks``: formatted disk templates and the per-sliver ext4 disks made from them (vdisk.py);
* ``images_dir``: the read-only image bases (images.py);
* ``warmer``: one thread that keeps pools of ready-made sliver parts full between start-ups
  (warmer.py): the spare netns + veth pairs here, a backend's own parts (runc: mounted disks,
  supervisors) through ``warmer.add(job)``; start-ups run inside ``warmer.hold()``.

``key`` arguments are ``sliver_key(sliver_id)`` (naming.py, re-exported here): a name safe for
cgroups, files and runc ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from node_agent import cgroups, firewall, images, userns
from node_agent.addresses import AddressPool
from node_agent.cgroup_limits import Limits
from node_agent.naming import sliver_key
from node_agent.netdev import Network
from node_agent.slicenet import SliceNet, check_resolvers
from node_agent.vdisk import VDisks
from node_agent.warmer import Warmer
from slices.protocol import Peer

log = logging.getLogger("slicemesh.agent")

__all__ = ["MachineResources", "sliver_key"]


class MachineResources:
    """The node-level resources every real backend of one node shares; see the module docstring."""

    def __init__(
        self,
        state_dir: Path,
        node: str,
        *,
        prefix: str = "slicemesh",
        subnet: str | None = None,
        capacity_cpu: float | None = None,
        capacity_memory: int | None = None,
        images_dir: Path = images.DEFAULT_DIR,
        host_access: Sequence[str] = firewall.DEFAULT_ACCESS,
        uid_block: int | None = userns.DEFAULT_BLOCK,
        nat: bool = False,
        resolvers: Sequence[str] = (),
    ) -> None:
        """``host_access``: the ``sliver_host_access`` setting; ``uid_block``: this node's block
        of host ids (``sliver_uid_block``), None for slivers without user namespaces; ``nat``
        and ``resolvers``: ``sliver_nat`` and ``sliver_resolvers`` (docs/networking.md)."""
        access = firewall.parse_access(host_access)  # bad settings fail here, before anything is made
        self.slicenet = SliceNet(resolvers=check_resolvers(resolvers))
        self.written: firewall.SetValues | None = None  # the slice sets as last written (None: unknown)
        firewall.require_nft()
        if uid_block is not None:
            userns.check_block(uid_block)
        self.uid_block = uid_block
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.node, self.prefix = node, prefix
        self.images_dir = Path(images_dir)
        self.cg = cgroups.Cgroups(prefix, node)
        self.cg.ensure_node(capacity_cpu, capacity_memory)
        self.cgroup_version = cgroups.version()
        self.swap_accounting = cgroups.swap_accounting()
        self.net = Network(prefix, node, subnet, host_access=access, userns=uid_block is not None, nat=nat)
        self.net.ensure_bridge()
        self.warmer = Warmer(node)
        self.warmer.add(self.net.spares.fill_one)
        self.addresses = AddressPool(self.state_dir / "addresses.json", self.net.subnet)
        self.disks = VDisks(self.state_dir / "templates")

    def set_slices(self, peers: Sequence[Peer], open_slices: Sequence[str], local: Mapping[str, tuple[str, str]]) -> bool:
        """Make the firewall follow who shares a slice with our slivers (``local``: sliver id ->
        (slice, address)); True when anything changed (then /etc/hosts are due too)."""
        if not self.slicenet.update(peers, open_slices, local):
            return False
        self._write_sets()
        return True

    def _write_sets(self) -> None:
        """The sets as ``slicenet`` says, written as changes from what was last written
        (``written``); whole when nothing is known to be written or the change failed (a set
        changed behind the agent's back)."""
        sn = self.slicenet
        others = {addr for _, addr in sn.members.values()} - sn.managed()
        ports = {(port, addr) for sid, (_, addr) in sn.local.items() for port in self.net.ports(sliver_key(sid))}
        now = firewall.slice_sets(sn.pairs(), sn.open_addresses(), sn.managed(), others, ports)
        before, self.written = self.written, None
        try:
            try:
                firewall.set_slices(self.net.bridge, now, before)
            except firewall.FirewallError:
                if before is None:
                    raise
                log.warning("the firewall's slice sets of %s were not as written; writing them whole", self.net.bridge)
                firewall.set_slices(self.net.bridge, now)
        except firewall.FirewallError:
            sn.members, sn.local = {}, {}  # unknown: the next call writes the sets whole again
            raise
        self.written = now

    def check_firewall(self) -> bool:
        """Make the node's tables again if they are gone (a flushed ruleset, a firewall service
        that loaded its own): the rules, then the sets as the agent last wrote them, so its
        slivers are closed off from the host and from each other again. True when they were
        gone. The agent calls it every ``firewall.CHECK_EVERY`` seconds."""
        if firewall.present(self.net.bridge):
            return False
        self.net.install_firewall()
        self.written = None  # the tables are new: their sets are empty
        self._write_sets()
        return True

    def limits(self, cpu: float, memory: int, pids: int) -> Limits:
        """A sliver's limits as this host can enforce them (memory+swap only where accounted)."""
        return Limits(cpu, memory, pids, self.swap_accounting)

    @property
    def code_root(self) -> Path:
        """Where slices' code bundles live on this node (node_agent/codecache.py)."""
        return self.state_dir / "code"

    def host_id(self, address: str) -> int | None:
        """The first host uid/gid of the range of the sliver at ``address``; None: no user namespaces."""
        return None if self.uid_block is None else userns.sliver_host_id(self.uid_block, self.net.subnet, address)

    def cgroup_path(self, key: str) -> str:
        """The sliver's cgroup as an absolute path in every hierarchy (runc's ``cgroupsPath``)."""
        return f"/{self.cg.leaf(key)}"

    def close(self) -> None:
        """Stop the warmer and release what it kept ready (netns + veth); slivers keep running.
        Backends release their own warm parts first (their ``close``)."""
        self.warmer.stop()
        self.net.close()

    def forget(self) -> None:
        """Remove the bridge, its firewall table and the node cgroup; only once no sliver is
        left (tests, uninstall)."""
        self.net.remove_bridge()
        self.cg.remove_node()
        self.close()
