"""`magworld bench generate`: its FLOP count and its report (the GPU figures come from it)."""

import json

from worldmodel.bench_flops import kernel_kind, pass_flops
from worldmodel.cli import main
from worldmodel.config import preset


def test_flops_of_a_pass_count_every_matrix_product_and_attention_once():
    m = preset("tiny").model  # 3 frames of 12 tokens, d 32, ffn 64, 2 layers, 2 prompt tokens of 16
    t, d, f, lc = 36, 32, 64, 2
    per_layer = 2 * t * d * (4 * d + 2 * f) + 4 * t * d * d + 4 * lc * d * d
    matmul = 2 * per_layer + 2 * 2 * t * 4 * d + 2 * lc * 16 * d + 2 * lc * d * d
    for slots in (0, 5):
        attention = 2 * (4 * t * (slots * 12 + t) * d + 4 * t * lc * d)
        assert pass_flops(m, slots) == {"matmul": matmul, "attention": attention}


def test_kernel_names_are_sorted_by_kind():
    assert kernel_kind("flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>>") == "attention"
    assert kernel_kind("fmha_cutlassF_bf16_aligned_64x128_rf_sm80") == "attention"
    assert kernel_kind("cudnn_generated_fort_native_sdpa_sm90_knob_7") == "attention"
    assert kernel_kind("nvjet_tst_192x192_64x3_2x1_v_bz_coopB_TNN") == "matmul"
    assert kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64") == "matmul"
    assert kernel_kind("vectorized_elementwise_kernel<4, GeluCUDAKernelImpl>") == "other"
    # inductor's (--compile): fused elementwise work, and a matmul template of max-autotune
    assert kernel_kind("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0") == "other"
    assert kernel_kind("triton_poi_fused_addmm_gelu_view_3") == "other"
    assert kernel_kind("triton_tem_fused_addmm_1") == "matmul"


def test_the_report_times_from_an_empty_memory_to_the_steady_state(tmp_path, capsys):
    out = tmp_path / "gen.json"
    for graphs in ([], ["--cuda-graphs"], ["--cuda-graphs", "--compile"]):
        assert main(["bench", "generate", "--preset", "tiny", "--device", "cpu", "--blocks", "14", "--warmup", "1",
                     "--first-frames", "9", "--temporal-compression", "4", "--json", str(out), *graphs]) == 0
        r = json.loads(out.read_text())
        budget = preset("tiny").memory.attention_budget
        # mag keeps one slot per block: blocks 0..11 attend to 0..11 held slots, then to the budget
        assert r["steady_slots"] == budget and r["steady_blocks"] == 14 - budget
        assert r["first_frames"] == 9 and r["passes_per_block"] == 5 and r["cuda_graphs"] == bool(graphs)
        assert r["compiled"] == ("--compile" in graphs)
        if r["compiled"]:  # the token paths (worldmodel/model/fused.py), compiled before the graphs are made
            assert r["compile_mode"] == "default" and r["compiled_graphs"] >= 3
        assert r["video_frames_per_s_first"] > r["frames_per_s_first"] > 0
        assert r["tflop_per_s_steady"] > 0 and r["block_ms_p99_steady"] >= r["block_ms_p50_steady"]
