"""Use cases of the gateway. They take ports in their constructors and know no framework or SDK.

objects.py        PutObject, GetObject, HeadObject, DeleteObject: thin, over the paths below
reads.py          VersionReads: the ID's current version (R replicas, and where it sat before)
writes.py         VersionWrites: a new version on the ID's replicas, acknowledged at W
conditional.py    ConditionalWrites: If-Match / If-None-Match by a pending version and a look
placement.py      where a write goes, and moving a version off a node drained meanwhile
bodies.py         a write's body: gathered when small, its last chunk held until it may commit
fanout.py         Fanout: one body to N nodes at once
quorum.py         ask_quorum: R of the replicas at once, the next one for one that fails
holdings.py       Holding, Current: what nodes hold of an ID, and which version is current
upkeep.py         Upkeep: read repair, and removing versions a newer one made useless
background.py     Background: bounded work left for later
copies.py         copy_version: one version from node to node, checked by the target
fleet.py          Fleet: members from discovery, marks from the nodes, confirm_placed
membership.py     Membership: one view of the fleet and its rings
fleet_watcher.py  FleetWatcher: discovery's change feed, reconnected with backoff
node_access.py    NodeAccess: admission to a node (breaker, cap) and what its answers teach
readiness.py      readiness, and NodeHealth: up, down or resting
walks.py          merged_walk: every node's walk merged, one ID at a time
settle.py         Settle: one ID's newest version on its replicas, nothing anywhere else
rebalance.py      Rebalance: a pass over every node (and repair: the same)
drain.py          Drain: emptying a node, exact whichever gateway takes writes meanwhile
leases.py         JobLease: one rebalance or drain at a time across every gateway
listing.py        ListObjects: a page of the stored IDs, with a bounded scan
auth.py           AccessControl (the keyring requests are checked against, kept current) and
                  Credentials (tokens, signed URLs, key rotation: what the commands change)
"""
