"""Everything that talks to tor: control-port helpers, tor processes, the private testnet."""
