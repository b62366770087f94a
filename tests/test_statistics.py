"""Second moments C = E[k kᵀ] of MLP keys: against a hand computation, across dtypes, and the cache."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from kedit.errors import CacheError
from kedit.stats import collect_second_moments, files_corpus, second_moments
from kedit.stats import second_moment as second_moment_module

N_TOKENS = 300
SEQUENCE_LENGTH = 32


def _hand_windows(lm, corpus, n_tokens: int, sequence_length: int) -> list[list[int]]:
    """The corpus cut as documented: each document tokenised, cut into windows, until n_tokens."""
    windows, produced = [], 0
    for document in corpus.documents():
        ids = lm.tokenizer(document)["input_ids"]
        for start in range(0, len(ids), sequence_length):
            window = ids[start : start + sequence_length][: n_tokens - produced]
            if len(window) >= 2:
                windows.append(window)
                produced += len(window)
            if produced == n_tokens:
                return windows
    raise AssertionError("the test corpus is too small")


def _hand_second_moment(lm, layer: int, windows: list[list[int]]) -> torch.Tensor:
    """(X^T X) / N in float64, X the down-projection inputs of each window run alone (no padding)."""
    module = lm.module(lm.anatomy.mlp_out_paths[layer])
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0][0].double()))
    try:
        with torch.no_grad():
            for window in windows:
                lm.model(torch.tensor([window]))
    finally:
        handle.remove()
    keys = torch.cat(captured)  # (N, d_k)
    assert keys.shape == (sum(map(len, windows)), lm.anatomy.key_size)
    return keys.T @ keys / keys.shape[0]


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def test_second_moment_equals_hand_computation(lm, corpus_file):
    corpus = files_corpus([corpus_file])
    windows = _hand_windows(lm, corpus, N_TOKENS, SEQUENCE_LENGTH)
    assert len({len(w) for w in windows}) > 1  # ragged windows: the batches are left-padded
    computed = collect_second_moments(lm, [1], corpus, n_tokens=N_TOKENS, sequence_length=SEQUENCE_LENGTH,
                                      batch_tokens=128, progress=False)
    expected = _hand_second_moment(lm, 1, windows)
    assert set(computed) == {1}
    assert computed[1].dtype == torch.float64
    assert computed[1].shape == (lm.anatomy.key_size, lm.anatomy.key_size)
    assert _relative_error(computed[1], expected) < 1e-6
    assert torch.allclose(computed[1], computed[1].T)
    # Uncentred and per-token: the trace is the mean squared key norm.
    assert float(computed[1].trace()) == pytest.approx(float(expected.trace()), rel=1e-6)


def test_float32_blocks_match_float64_accumulation(lm, corpus_file):
    corpus = files_corpus([corpus_file])
    kwargs = {"n_tokens": 1000, "sequence_length": SEQUENCE_LENGTH, "batch_tokens": 256, "progress": False}
    block32 = collect_second_moments(lm, [0, 2], corpus, **kwargs)
    block64 = collect_second_moments(lm, [0, 2], corpus, block_dtype=torch.float64, **kwargs)
    for layer in (0, 2):
        assert _relative_error(block32[layer], block64[layer]) < 1e-5


def test_several_layers_in_one_pass_equal_single_layer_passes(lm, corpus_file):
    corpus = files_corpus([corpus_file])
    kwargs = {"n_tokens": N_TOKENS, "sequence_length": SEQUENCE_LENGTH, "batch_tokens": 128, "progress": False}
    together = collect_second_moments(lm, [2, 0, 1, 0], corpus, **kwargs)  # unsorted, repeated
    assert sorted(together) == [0, 1, 2]
    for layer in (0, 1, 2):
        alone = collect_second_moments(lm, [layer], corpus, **kwargs)[layer]
        assert torch.equal(together[layer], alone)
    assert not torch.allclose(together[0], together[2])  # different layers, different statistics


def test_windows_never_exceed_the_model_context(make_lm, corpus_file):
    """The tiny GPT-2 has 128 positions; the default 512-token windows are cut to 128 (D.1: each
    text truncated to the context length), not fed past the position table."""
    lm = make_lm("gpt2")
    assert lm.model.config.n_positions == 128
    corpus = files_corpus([corpus_file])
    default = collect_second_moments(lm, [0], corpus, n_tokens=600, progress=False)[0]
    explicit = collect_second_moments(lm, [0], corpus, n_tokens=600, sequence_length=128, progress=False)[0]
    assert torch.equal(default, explicit)
    assert _relative_error(default, _hand_second_moment(lm, 0, _hand_windows(lm, corpus, 600, 128))) < 1e-6


def test_corpus_too_small_raises(lm, corpus_file):
    with pytest.raises(CacheError, match="only"):
        collect_second_moments(lm, [0], files_corpus([corpus_file]), n_tokens=10**6, progress=False)


@pytest.fixture
def counted_collect(monkeypatch):
    """Wrap collect_second_moments to record which layers each call computed."""
    calls: list[list[int]] = []
    original = second_moment_module.collect_second_moments

    def counting(lm, layers, *args, **kwargs):
        calls.append(sorted(layers))
        return original(lm, layers, *args, **kwargs)

    monkeypatch.setattr(second_moment_module, "collect_second_moments", counting)
    return calls


def test_second_moments_cache_read_partial_and_rebuilt(make_lm, corpus_file, tmp_path, monkeypatch, counted_collect):
    monkeypatch.setenv("KEDIT_HOME", str(tmp_path / "home"))
    lm = make_lm("llama")
    corpus = files_corpus([corpus_file])

    first = second_moments(lm, [1], corpus, n_tokens=N_TOKENS, progress=False)
    assert counted_collect == [[1]]
    files = sorted((tmp_path / "home" / "stats").rglob("*.safetensors"))
    assert len(files) == 1

    # A second call reads the file: computing would fail.
    def refuse(*_args, **_kwargs):
        raise AssertionError("statistics were recomputed instead of read from the cache")

    with monkeypatch.context() as patch:
        patch.setattr(second_moment_module, "collect_second_moments", refuse)
        again = second_moments(lm, [1], corpus, n_tokens=N_TOKENS, progress=False)
    assert torch.equal(again[1], first[1])

    # Only the missing layer is computed when some are cached.
    both = second_moments(lm, [1, 2], corpus, n_tokens=N_TOKENS, progress=False)
    assert counted_collect == [[1], [2]]
    assert torch.equal(both[1], first[1])

    # A corrupted file is ignored and rebuilt.
    files[0].write_bytes(b"not a safetensors file" * 10)
    rebuilt = second_moments(lm, [1], corpus, n_tokens=N_TOKENS, progress=False)
    assert counted_collect == [[1], [2], [1]]
    assert torch.equal(rebuilt[1], first[1])
    assert torch.equal(load_file(str(files[0]))["second_moment"], first[1])

    # The key includes the token count and the model's weights.
    second_moments(lm, [1], corpus, n_tokens=N_TOKENS + 20, progress=False)
    second_moments(make_lm("llama", seed=1), [1], corpus, n_tokens=N_TOKENS, progress=False)
    assert counted_collect == [[1], [2], [1], [1], [1]]
