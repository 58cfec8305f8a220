"""semisep.pipeline: corpora, audio decoding, the spectrogram transform, shards, ingestion, CLI."""
