"""Discovery of the storage nodes through the Docker Engine API (the docker SDK).

containers.py     GATEWAY_DISCOVERY=docker: this daemon's containers
swarm.py          GATEWAY_DISCOVERY=swarm: a swarm's services, through a manager
swarm_members.py  services and tasks as members (pure, tested on recorded payloads)
keys.py           a node's keys from its environment, as the node server reads them
client.py         what both share: the client and its failures, the events stream and feed
"""

from adapters.docker.containers import DockerNodeDiscovery
from adapters.docker.keys import credentials_from_env
from adapters.docker.swarm import SwarmNodeDiscovery

__all__ = ["DockerNodeDiscovery", "SwarmNodeDiscovery", "credentials_from_env"]
