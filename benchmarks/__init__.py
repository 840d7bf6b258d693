"""Benchmarks for tvr-gym; each reports a ratio against a reference measured in the same run."""


def cpu_model() -> str:
    """The CPU model name as ``lscpu`` reports it (``platform.processor()`` where lscpu is missing)."""
    import platform
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    return model or platform.processor() or "unknown"
