"""The study's own moves beside the sampler: the climb to the memory edge, repair,
fill, local moves."""
