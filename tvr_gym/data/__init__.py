"""Datasets on disk: the TRANCE-layout dataset writer (``dataset``) and the trainer formats
(``export``: Hugging Face, verl, EasyR1, SkyRL, TRANCE)."""
