"""The CPU description the benchmarks record next to their throughput figures."""

from __future__ import annotations

import pytest

from metascreen.pipelines.bench import cpu_info, cpu_line

pytestmark = pytest.mark.unit

AVX2_HOST = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx fma avx2 sha_ni
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx fma avx2 sha_ni
"""

VNNI_HOST = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx fma avx2 avx512f avx512bw avx512_vnni amx_int8 amx_tile
"""


def test_cpu_info_reads_model_and_matrix_flags() -> None:
    avx2 = cpu_info(AVX2_HOST)
    assert avx2 == {
        "cpu_model": "AMD EPYC",
        "cpu_flags": ["avx2", "fma"],
        "int8_dot_product": False,
    }
    vnni = cpu_info(VNNI_HOST)
    assert vnni["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert vnni["cpu_flags"] == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"]
    assert vnni["int8_dot_product"] is True
    assert (
        cpu_line(vnni)
        == "Intel(R) Xeon(R) Platinum 8480+ (avx2, fma, avx512f, avx512_vnni, amx_int8)"
    )


def test_cpu_info_without_proc_cpuinfo_says_unknown() -> None:
    r = cpu_info("")
    assert r["cpu_flags"] is None and r["int8_dot_product"] is None
    assert cpu_line(r).endswith("(flags unknown)")
