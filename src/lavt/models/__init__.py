"""The nn.Modules, tensors in and tensors out: the assembled model (:mod:`.lavt`), its language-aware
Swin encoder (:mod:`.encoder`, :mod:`.swin`), PWAM and gate (:mod:`.pwam`), the 3D PWAM (:mod:`.pwam3d`),
the decoder (:mod:`.decoder`) and the text encoder + tokenizer (:mod:`.text`)."""
