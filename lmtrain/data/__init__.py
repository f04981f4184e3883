"""From text to batches: reading text, tokenizers, corpora (vocabulary, cached ids), the known public
datasets, and the time-major batch layout of truncated BPTT."""
