"""Where problems come from: the procedural generator (with its visibility check, ``occlusion``) and the
problem sources an environment draws from (procedural, or a TRANCE directory)."""
