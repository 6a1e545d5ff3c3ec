"""Reading shards: the block-shuffled stream, its raw reads, fresh MixUp/CutMix."""
