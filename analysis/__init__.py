"""Analysis of tts runs: load sweeps, difficulty bins, compute-optimal selection, figures."""
