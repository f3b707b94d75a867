"""The tagger's peers in `benchmarks.kafka`: the project's own `TaggerCore` driven by other Kafka loops.

Each runs as its own process with the tagger's TAGSTREAM_* settings and the same guarantee
(at-least-once: a batch's tag changes acknowledged, then its states written to RocksDB and the
changelog, then its offsets committed), so CPU per event compares the loops and nothing else.
"""
