"""Runtimes a transformer model runs through, and the precision label a version records.

The same weights run through torch, OpenVINO or ONNX Runtime; on a CPU the latter two are 2-4x
faster. A version's tag carries the runtime and precision (``EmbeddingSpec.precision``): torch keeps
its bare labels (``fp32``, ``bf16``), so a deployment that pins ``EA_RUNTIME=torch`` keeps its tags,
and every other runtime is named (``openvino-bf16``, ``onnx-fp32``, ``openvino-int8``). Measured
(docs/benchmarks.md), lossless runtimes differ from torch fp32 by cosine < 1e-4, int8 by up to 0.01:
one rule for both, with no threshold to argue about, is that a version's documents and its queries
come from one runtime and precision, and a switch is a new version (re-embedded at the fast speed).
"""

from __future__ import annotations

from dataclasses import dataclass

RUNTIMES = ("torch", "openvino", "onnx")
TORCH_PRECISIONS = ("fp32", "bf16", "fp16")
# What each runtime other than torch offers here. OpenVINO's bf16 is its CPU default where the CPU
# has bf16 instructions; its int8 is static (NNCF), calibrated on the deployment's own windows.
EXPORTED_PRECISIONS = {"openvino": ("bf16", "fp32", "int8"), "onnx": ("fp32", "int8")}
# Lowest cosine to torch fp32, per check text, that a runtime's vectors must reach to be used.
MIN_COSINE_LOSSLESS = 0.999
MIN_COSINE_INT8 = 0.99
# ``auto`` keeps the fastest candidate only if it beats the next one by this much: near a tie the
# earlier (simpler) candidate stays, so noise does not split identical machines between tags.
TIE = 1.05


@dataclass(frozen=True)
class RuntimePrecision:
    runtime: str
    precision: str

    @property
    def label(self) -> str:
        """What the version tag records."""
        return self.precision if self.runtime == "torch" else f"{self.runtime}-{self.precision}"

    @property
    def lossless(self) -> bool:
        return self.precision != "int8"

    @property
    def min_cosine(self) -> float:
        return MIN_COSINE_LOSSLESS if self.lossless else MIN_COSINE_INT8


def parse_label(label: str) -> RuntimePrecision:
    """The runtime and precision a version's ``precision`` field names."""
    if label in TORCH_PRECISIONS:
        return RuntimePrecision("torch", label)
    runtime, _, precision = label.partition("-")
    if precision not in EXPORTED_PRECISIONS.get(runtime, ()):
        raise ValueError(f"unknown runtime/precision label {label!r}")
    return RuntimePrecision(runtime, precision)


def check_setting(runtime: str, precision: str) -> None:
    """A clear error for a setting no runtime offers."""
    if runtime not in (*RUNTIMES, "auto"):
        raise ValueError(f"EA_RUNTIME must be auto or one of {RUNTIMES}, got {runtime!r}")
    offered = {p for ps in EXPORTED_PRECISIONS.values() for p in ps} | set(TORCH_PRECISIONS)
    if precision != "auto" and precision not in offered:
        raise ValueError(f"EA_PRECISION must be auto or one of {sorted(offered)}, got {precision!r}")
    if runtime == "torch" and precision == "int8":
        raise ValueError("EA_PRECISION=int8 runs through openvino or onnx, not torch")
    if runtime in EXPORTED_PRECISIONS and precision not in ("auto", *EXPORTED_PRECISIONS[runtime]):
        raise ValueError(f"{runtime} offers {EXPORTED_PRECISIONS[runtime]}, not {precision!r}")


# How far R@10 (same-language and cross-lingual, benchmarks.quality) may fall below torch fp32's for
# ``auto`` to take a runtime: lossless ones must be indistinguishable, int8 nearly so.
MAX_R10_LOSS = {True: 0.002, False: 0.005}


def admitted(quality: dict[str, dict[str, float]] | None, choice: RuntimePrecision) -> bool:
    """Whether a recorded quality measurement (label -> {"same": R@10, "cross": R@10}, with torch
    fp32 as ``fp32``) shows ``choice`` within ``MAX_R10_LOSS`` of torch fp32 on both query kinds."""
    if not quality or "fp32" not in quality or choice.label not in quality:
        return False
    base, mine = quality["fp32"], quality[choice.label]
    limit = MAX_R10_LOSS[choice.lossless]
    return all(base[kind] - mine[kind] <= limit for kind in ("same", "cross"))


def candidates(
    runtime: str,
    precision: str,
    *,
    cpu_bf16: bool,
    quality: dict[str, dict[str, float]] | None = None,
) -> list[RuntimePrecision]:
    """What ``auto`` times, simplest first. int8 is a candidate when asked for (``EA_PRECISION=int8``)
    or where ``quality`` (recorded on this machine by ``benchmarks.quality --record``) shows it
    within 0.005 R@10 of torch fp32 on both query kinds; never on speed alone."""
    check_setting(runtime, precision)
    found = []
    for rt in RUNTIMES if runtime == "auto" else (runtime,):
        offered = TORCH_PRECISIONS[:2] if rt == "torch" else EXPORTED_PRECISIONS[rt]
        for p in offered:
            if p == "int8" and precision != "int8" and not admitted(quality, RuntimePrecision(rt, p)):
                continue
            if p == "bf16" and not cpu_bf16:
                continue
            if precision not in ("auto", p):
                continue
            found.append(RuntimePrecision(rt, p))
    return found


def fastest(seconds: dict[RuntimePrecision, float]) -> RuntimePrecision:
    """The candidate to run, from the time each took on the same work (in candidate order)."""
    if not seconds:
        raise ValueError("nothing was measured")
    best = next(iter(seconds))
    for candidate, took in seconds.items():
        if took * TIE < seconds[best]:
            best = candidate
    return best


# Texts the exported model is verified on, queries and passages, in 12 languages and 8 scripts.
CHECK_TEXTS = (
    "how much protein should a female eat per day",
    "ls - list directory contents, sorted alphabetically unless another order is asked for",
    "Der schnelle braune Fuchs springt über den faulen Hund, der im Schatten schläft.",
    "Le renard brun rapide saute par-dessus le chien paresseux qui dort à l'ombre.",
    "El rápido zorro marrón salta sobre el perro perezoso que duerme a la sombra.",
    "A rápida raposa marrom pula sobre o cão preguiçoso que dorme à sombra.",
    "Il veloce cane marrone salta sopra il cane pigro che dorme all'ombra.",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку, спящую в тени.",
    "快速的棕色狐狸跳过了在阴凉处睡觉的懒狗。",
    "素早い茶色の狐が、日陰で眠るのろまな犬を飛び越える。",
    "빠른 갈색 여우가 그늘에서 자는 게으른 개를 뛰어넘는다.",
    "Szybki brązowy lis przeskakuje nad leniwym psem śpiącym w cieniu.",
    "Hızlı kahverengi tilki gölgede uyuyan tembel köpeğin üzerinden atlar.",
    "ο γρήγορος καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο",
    "cp copies files and directories; with -r it copies directories recursively, "
    "keeping the tree of the source below the destination, and with -p it keeps modes and times. "
    "Without -f an existing destination that cannot be opened is an error.",
)
