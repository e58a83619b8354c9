"""The loop that drives agents: one for a real machine, many for simulated ones.

One poller over every agent's socket and every executor's waker; deadlines for heartbeats
and registration retries, heartbeats first (ticks.py). Simulated agents share a process but
each has its own socket and identity, so the controller sees them exactly as it sees real
machines.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Mapping, Sequence

from node_agent.agent import Agent
from node_agent.ticks import Ticks
from slices.transport import Dealer, ManyPoller, Waker

log = logging.getLogger(__name__)

FRAMES_PER_TURN = 32


class AgentHost:
    def __init__(self, agents: Sequence[Agent], *, clock: Callable[[], float] = time.time, readers: Mapping[int, Callable[[], None]] | None = None) -> None:
        """``readers``: more file descriptors to watch, each with what to call when it is
        readable (a simulation host's control pipe)."""
        self.agents = list(agents)
        self.readers = dict(readers or {})
        self.crashed: set[str] = set()
        self.clock = clock
        self.poller = ManyPoller()  # zmq_poll over thousands of sockets cost a core
        self.by_sock: dict[int, tuple[int, Agent]] = {}  # id of its dealer -> (its index, the agent)
        self.executors: dict[int, Agent] = {}
        for i, agent in enumerate(self.agents):
            self.poller.add(agent.dealer)
            self.by_sock[id(agent.dealer)] = (i, agent)
            fd = agent.executor.fd
            if fd is not None:
                self.poller.add(fd)
                self.executors[fd] = agent
        self.waker = Waker()
        self.poller.add(self.waker.fd)
        self.posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()  # callbacks from agents' threads
        for agent in self.agents:
            agent.posted, agent.wake = self.posted, self.waker.wake
        for fd in self.readers:
            self.poller.add(fd)
        self._stopping = False
        self._goodbye = True
        self.ticks = Ticks(self._tick, lambda i: self.agents[i].registered)

    def stop(self, *, goodbye: bool = True) -> None:
        """Safe from a signal handler or another thread. ``goodbye=False`` leaves as a crash
        would: the controller finds the nodes ``down`` when their heartbeats stop."""
        self._goodbye = goodbye
        self._stopping = True
        self.waker.wake()

    def run(self) -> None:
        try:
            for i, agent in enumerate(self.agents):
                agent.start()
                self.ticks.add(agent.due(), i)
            while not self._stopping:
                try:
                    self.turn()
                except Exception:  # one agent's bad moment must not stop the others
                    log.exception("an agent loop turn failed; serving on")
                    time.sleep(0.05)
        finally:
            self.close()

    def turn(self, max_wait: float = 0.5) -> None:
        # Heartbeats first, and a bounded number of frames per agent per turn: a host busy
        # reconciling or registering for thousands of agents must not starve their
        # heartbeats. Registrations get a slice of each turn (ticks.py).
        self.ticks.run(self.clock())
        for ready in self.poller.poll(self.ticks.wait(self.clock(), max_wait)):
            if isinstance(ready, Dealer):
                i, agent = self.by_sock[id(ready)]
                agent.on_readable(limit=FRAMES_PER_TURN)
                self.ticks.answered(i, agent.due)
            elif ready == self.waker.fd:
                self.waker.clear()
                self._run_posted()
            elif isinstance(ready, int) and ready in self.executors:
                self.executors[ready].executor.drain()
            elif isinstance(ready, int) and ready in self.readers:
                self.readers[ready]()
            self.ticks.run(self.clock(), register=False)
        # Registration or a reply may have moved a deadline earlier: re-key small hosts once
        # a turn (a big host's agents catch up at their next tick).
        if len(self.agents) <= 64:
            self.ticks.rekey((a.due(), i) for i, a in enumerate(self.agents) if a.name not in self.crashed)

    def _run_posted(self) -> None:
        while True:
            try:
                callback = self.posted.get_nowait()
            except queue.Empty:
                return
            try:
                callback()
            except Exception:  # one agent's bad moment must not stop the others
                log.exception("a callback from an agent's thread failed; serving on")

    def unwatch(self, fd: int) -> None:
        """Stop watching one of ``readers`` (its writer closed it)."""
        self.readers.pop(fd, None)
        self.poller.remove(fd)

    def crash(self, name: str) -> bool:
        """End one agent as a crash of its machine would: no goodbye, no more heartbeats (the
        controller finds the node ``down``), its slivers left as they are on disk and running.
        The others served here carry on. False when no such agent runs here."""
        agent = next((a for a in self.agents if a.name == name and a.name not in self.crashed), None)
        if agent is None:
            return False
        self.crashed.add(name)
        self.poller.remove(agent.dealer)
        if agent.executor.fd is not None:
            self.poller.remove(agent.executor.fd)
            self.executors.pop(agent.executor.fd, None)
        agent.close(goodbye=False)
        agent.executor.close()
        agent.close_backends()  # this process's handles only: what they manage stays
        self.ticks.drop(self.agents.index(agent))
        log.warning("%s: its agent crashed on request; %d other agents here serve on", name, len(self.agents) - len(self.crashed))
        return True

    def _tick(self, i: int) -> float | None:
        agent = self.agents[i]
        if agent.name in self.crashed:
            return None
        agent.tick()
        return agent.due()

    def close(self) -> None:
        # Every goodbye leaves before any slow teardown: a node still saying goodbye while
        # another's executor drains would be found ``down`` first.
        live = [a for a in self.agents if a.name not in self.crashed]
        for agent in live:
            agent.close(goodbye=self._goodbye)
        for agent in live:
            agent.executor.close()
        self.waker.close()
        self.poller.close()
