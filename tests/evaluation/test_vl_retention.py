"""Two tiny random-weight Qwen3-VL checkpoints scored on POPE, MMBench and MME from local files, side by side."""

import json

import pytest

from vlaforge.datasets.synth.vl_benchmarks import write_mmbench, write_mme, write_pope
from vlaforge.evaluation.vl_retention import VlEvalConfig, evaluate_vl
from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl


@pytest.fixture(scope="module")
def benchmark_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vl-benchmarks")
    return (("pope", str(write_pope(root / "pope")[0])), ("mmbench", str(write_mmbench(root / "mmbench.tsv"))),
            ("mme", str(write_mme(root))))


def test_two_vlms_side_by_side_with_every_answer_kept(benchmark_files, tmp_path):
    base, step1 = write_tiny_qwen3_vl(tmp_path / "base" / "vlm"), write_tiny_qwen3_vl(tmp_path / "step1" / "vlm",
                                                                                       seed=1)
    seen = []
    results = evaluate_vl(VlEvalConfig(vlms=(str(base), str(step1)), benchmarks=benchmark_files,
                                       output=tmp_path / "out", max_new_tokens=4),
                          progress=lambda vlm, benchmark, score: seen.append((vlm, benchmark)))
    labels = ["base/vlm", "step1/vlm"]  # both directories are named vlm: the parent tells them apart
    assert list(results["vlms"]) == labels and len(seen) == 6
    assert [row["benchmark"] for row in results["comparison"]] == ["pope", "mmbench", "mme"]
    for row in results["comparison"]:
        assert row["step1/vlm - base/vlm"] == pytest.approx(row["step1/vlm"] - row["base/vlm"])
    assert results["benchmarks"]["pope"]["base/vlm"]["questions"] == 8
    assert results["benchmarks"]["mmbench"]["step1/vlm"]["prompts"] == 9  # 3 questions, every rotation asked
    answers = (tmp_path / "out" / "vl_answers" / "base__vlm" / "pope.jsonl").read_text().splitlines()
    assert [json.loads(line)["qid"] for line in answers] == [str(i) for i in range(1, 9)]
    assert json.loads((tmp_path / "out" / "vl_results.json").read_text()) == results


def test_unknown_benchmark_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown VL benchmark 'popes'; did you mean 'pope'\?"):
        VlEvalConfig(vlms=("x",), benchmarks=(("popes", "file"),))
