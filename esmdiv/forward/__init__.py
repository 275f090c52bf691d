"""The forwards: where they run, attention backends, packing, the padded and packed paths, the
high-precision third run and the faults the self-test injects."""
