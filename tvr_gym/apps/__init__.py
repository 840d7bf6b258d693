"""The applications above the library: the ``tvr-gym`` command line, the demo and problem pictures.

Nothing in ``tvr_gym`` or ``tvr_gym.agents`` imports from here: arrows only point down.
"""
