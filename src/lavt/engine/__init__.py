"""Training and evaluating runs: the run configuration (:mod:`.config`), what a run is built from
(:mod:`.build`), the loop (:mod:`.trainer`), checkpoints and the run folder (:mod:`.checkpoint`), losses,
clean interruption (:mod:`.interrupt`) and `lavt eval` (:mod:`.evaluate`)."""
