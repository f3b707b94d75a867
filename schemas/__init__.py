"""The contracts: every message tagstream reads or writes, defined once as pydantic v2 models."""
