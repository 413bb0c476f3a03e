"""The training engine: building a run, feature taps, the loop, evaluation, checkpoints."""
