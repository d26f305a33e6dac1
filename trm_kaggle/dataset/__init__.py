"""The augmented ARC dataset: building it (`build`), its on-disk format (`format`), which
variants of a task it holds (`variants`) and the sampler that trains on it (`sampler`)."""
