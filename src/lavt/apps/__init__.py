"""Command-line faces of lavt: the `lavt` command (:mod:`.cli`) and the demos it runs
(:mod:`.demo`, :mod:`.demo_video`, sharing :mod:`.demo_runner`)."""
