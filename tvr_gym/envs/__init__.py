"""The Gymnasium environments: the shared base (``base``), the single-shot ``TVR-*-v0`` envs
(``single_shot``), ``TVR-Interactive-v0`` (``interactive``), its SB3 view (``interactive_sb3``), the
wrappers, and the registration of every id."""
