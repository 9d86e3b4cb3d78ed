"""Use cases of the gateway. They take ports in their constructors and know no framework or SDK.

objects.py        PutObject, GetObject, HeadObject, DeleteObject
fleet.py          Fleet: the current membership and its ring, kept by
fleet_watcher.py  FleetWatcher: discovery's change feed, reconnected with backoff
node_access.py    NodeAccess: admission to a node (breaker, cap) and what its answers teach
readiness.py      readiness, and NodeHealth: up, down or resting
rebalance.py      Rebalance: moving objects home, and draining nodes
auth.py           AccessControl (the keyring requests are checked against, kept current) and
                  Credentials (tokens, signed URLs, key rotation: what the commands change)
"""
