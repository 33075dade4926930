"""Where the code runs: CPU facts (:mod:`.machine`), precision choices and autocast
(:mod:`.precision`), processes under torchrun (:mod:`.distributed`), progress bars (:mod:`.progress`)."""
