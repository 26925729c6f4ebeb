"""The compiled-simulation tier of the block tests: :mod:`insitu.soc.compiled_stream` runs each block
against its golden twin on ≥ 10,000 random cases in every run."""

from insitu.soc.compiled_stream import CompiledStream, fields, pack, unpack

__all__ = ["CompiledStream", "fields", "pack", "unpack"]
