"""Developer tools: training, samples, benchmarks."""
