"""How a clip runs, for any causal layer stack: the causal state, tile seams and grids, the pass plan and its drivers, streams, the heap policy. Knows nothing of Wan."""
