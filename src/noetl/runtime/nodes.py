"""Snowflake node numbers leased from the store, so no two live processes on one store generate
the same ids (a pid modulo 1024 collides). A server and a local run lease their own node; a
remote worker gets one at registration (the server leases it in the worker's name and its
heartbeats renew it). `NOETL_SNOWFLAKE_NODE_ID` pins a node instead (then keeping nodes unique
is the operator's job)."""

from __future__ import annotations

import logging
import os
import secrets
import socket

from noetl.errors import NoetlError
from noetl.ids import Snowflake
from noetl.store.ports import Coordination

log = logging.getLogger(__name__)

NODE_TTL_SECONDS = 600.0
RENEW_SECONDS = 60.0


def process_owner(role: str) -> str:
    """A lease owner naming this process (host, pid and a random tag: pids are reused)."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class NodeLease:
    def __init__(self, store: Coordination, ids: Snowflake, owner: str) -> None:
        self.store = store
        self.ids = ids
        self.owner = owner

    def acquire(self) -> int:
        node = self.store.lease_node(self.owner, NODE_TTL_SECONDS)
        self.ids.use_node(node)
        return node

    def renew(self) -> None:
        """Keep the lease (called every RENEW_SECONDS); a failure is logged and retried later."""
        try:
            node = self.store.lease_node(self.owner, NODE_TTL_SECONDS)
        except NoetlError as exc:
            log.warning("renewing the snowflake node lease failed: %s", exc)
            return
        if node != self.ids.node:  # the lease lapsed and was given away meanwhile
            log.warning("snowflake node lease lapsed; now node %d (was %d)", node, self.ids.node)
            self.ids.use_node(node)

    def release(self) -> None:
        try:
            self.store.release_node(self.owner)
        except NoetlError as exc:
            log.debug("releasing the snowflake node lease failed: %s", exc)
