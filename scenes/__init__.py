"""The TRANCE scene specification as data (``spec.json``), shipped inside the wheel.

Read it through :func:`tvr_gym.core.spec.load_spec`; never copy its numbers into code.
"""
