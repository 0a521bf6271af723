"""The CPU's model, instruction-set flags and bfloat16 units (liverlib.cpu)."""

from __future__ import annotations

from liverlib.cpu import ISA_FLAGS, cpu_info, has_bf16_units


def test_bfloat16_units_need_the_flag_and_no_onednn_cap_below_them():
    assert not has_bf16_units({"avx2", "fma", "f16c"}, onednn_cap="")  # a plain AVX2 laptop
    assert not has_bf16_units({"avx512f", "avx512_vnni"}, onednn_cap="")  # AVX-512 without bf16
    assert has_bf16_units({"avx512f", "avx512_bf16"}, onednn_cap="")
    assert has_bf16_units({"amx_tile", "amx_bf16"}, onednn_cap="")
    assert has_bf16_units({"avx2", "avx_ne_convert"}, onednn_cap="")
    assert not has_bf16_units({"avx512f", "avx512_bf16"}, onednn_cap="avx2")  # the cap hides them from oneDNN
    assert has_bf16_units({"avx512f", "avx512_bf16"}, onednn_cap="AVX512_CORE_BF16")


def test_cpu_info_names_the_model_its_flags_and_cores(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = cpu_info()
    assert info["model"] and info["cores"] >= 1 and info["onednn_max_cpu_isa"] == "AVX2"
    assert set(info["isa"]) <= set(ISA_FLAGS) and list(info["isa"]) == [f for f in ISA_FLAGS if f in info["isa"]]
    assert not has_bf16_units()  # the cap from the environment
