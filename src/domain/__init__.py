"""The pure core: object IDs, nodes, placement, errors and ports. Standard library only."""
