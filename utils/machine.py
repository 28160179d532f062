"""What machine this is, for benchmark reports and CPU-specific test values (no TensorFlow)."""
import platform


def _cpuinfo_line(key):
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def is_x86():
    """Whether this is an x86-64 machine (where TensorFlow's oneDNN kernels apply)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def cpu_model_name():
    """The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC"), else what platform knows."""
    return _cpuinfo_line("model name") or platform.processor() or platform.machine()


def cpu_vector_extension():
    """The widest x86 vector extension the CPU reports: "AVX-512", "AVX2", "AVX" or ""."""
    flags = set((_cpuinfo_line("flags") or "").split())
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return ""


def cpu_description():
    """Model name and widest vector extension (e.g. "AMD EPYC, AVX2"): machines with one model
    name differ in speed with the extension (and TensorFlow's own oneDNN default with it)."""
    extension = cpu_vector_extension()
    return cpu_model_name() + (", " + extension if extension else "")
