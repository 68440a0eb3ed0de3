"""Container networks: `none`, `host`, or a bridge with a veth pair per container.

Imported by nothing below runtime, and only by the parts of it that start
or clean up a container on a bridge (so `--network none|host` never pays
for it). The modules:

- networks: the store's network definitions (Docker's bridge/host/none and
  user-defined bridge networks with their subnet and gateway);
- leases: the host's IPAM table (address, MAC, published ports per running
  container), shared by every store, and the host's network lock;
- subnets: the host's subnet claims, so no two networks of any stores overlap;
- endpoint: `up` before each start of a container's process, `down` after;
- bridge, netns, nl: the bridge and subnet choice, the container's named
  namespace, rtnetlink through pyroute2's message classes;
- ports: -p/-P to host ports; firewall: soko's nftables (or iptables) NAT;
- dns: the per-network DNS responder of user-defined networks.
"""
