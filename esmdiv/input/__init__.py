"""Input: reading and validating FASTA, the long-sequence policy, synthetic workloads (no torch)."""
