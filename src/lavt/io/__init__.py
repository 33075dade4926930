"""Files in and out: images (:mod:`.images`), videos (:mod:`.videos`), torch files loaded safely and
written atomically (:mod:`.torch_files`), prediction folders (:mod:`.outputs`), cheap checks of what a
user typed (:mod:`.inputs`). Nothing here imports torch at module level."""
