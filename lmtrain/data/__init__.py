"""From text to batches: tokenizers, corpora (reading, vocabulary, cached ids), the known public datasets,
and the time-major batch layout of truncated BPTT."""
