"""Weight packing: choose a storage format per weight tensor."""

from toolkit.pack.codebook import (
    CodebookTensor,
    find_codebook,
    pack_indices,
    unpack_indices,
)

__all__ = ["CodebookTensor", "find_codebook", "pack_indices", "unpack_indices"]
