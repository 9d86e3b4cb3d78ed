"""The pure core: object IDs, nodes, placement, errors and ports. Standard library only.

object_id.py        ObjectId: 1 to 32 ASCII letters and digits, checked on construction
node.py             Node, NodeState, Credentials (the secret never in a repr)
hash_ring.py        HashRing: IDs to node names, the owner and the preference list
objects.py          what is known of stored objects: StoredVersion (one version on one node),
                    ObjectInfo, ByteRange, StoredObject, ...
versions.py         Version, VersionClock: every write's stamp, in the order writes are made
leases.py           LeaseClaim, holder_of: a job's lease, claimed on the nodes
conditions.py       Preconditions: RFC 9110's conditional requests, evaluated in its order
circuit_breaker.py  NodeBreakers: a node that keeps failing rests
in_flight.py        InFlightLimits: requests that may wait for one node at once
auth.py             tokens (kept as hashes), scopes, signed URLs, and the Verifier of requests
errors.py           the one error tree
ports.py            NodeDiscovery, ChangeFeed, ObjectStorage, NodeMarking, Leases, CredentialStore:
                    what the adapters implement
sizes.py            KiB, MiB, GiB
"""
