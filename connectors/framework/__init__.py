"""The connector framework: ports' plumbing shared by every outside system (see connectors/README.md)."""
