"""Library systems: incremental OAI-PMH harvest of a member library's catalogue, and a watched drop folder of MARC
files, both into the catalogue ingest."""
