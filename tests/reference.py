"""The transformers reference, driven exactly as its streaming scheme prescribes (doc §5.3).

First chunk: 40 960 zeros + the first (delay + 1) * 1280 + 40 samples, mel with center=True
(8 * (33 + delay) frames = the whole prompt). Step k >= 1: samples [1280 (delay + k) - 200,
+1680) of the unpadded (right-padded) audio, mel with center=False, 8 frames. Generation ends when
the feature generator is exhausted (after position N - 1) or at EOS.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

LEFT = 40960
TOK = 1280


def right_pad(n: int, delay_tokens: int) -> int:
    return (-n) % TOK + (delay_tokens + 11) * TOK


def reference_features(
    audio: np.ndarray, delay_tokens: int, dtype: torch.dtype = torch.float32
) -> Iterator[torch.Tensor]:
    from transformers import VoxtralRealtimeFeatureExtractor

    fe = VoxtralRealtimeFeatureExtractor()
    ext = np.concatenate([audio, np.zeros(right_pad(len(audio), delay_tokens) + 400, np.float32)])
    n_tokens = 32 + (len(audio) + TOK - 1) // TOK + delay_tokens + 11
    first = np.concatenate([np.zeros(LEFT, np.float32), ext[: (delay_tokens + 1) * TOK + 40]])
    yield fe(first, sampling_rate=16000, return_tensors="pt", center=True).input_features.to(dtype)
    prompt_len = 33 + delay_tokens
    for k in range(1, n_tokens - prompt_len + 1):
        start = TOK * (delay_tokens + k) - 200
        chunk = ext[start : start + 1680]
        yield fe(chunk, sampling_rate=16000, return_tensors="pt", center=False).input_features.to(dtype)


@torch.no_grad()
def reference_stream(
    model: torch.nn.Module, audio: np.ndarray, delay_tokens: int, device: str = "cpu"
) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy ids and per-step logits [vocab] (float32, CPU) of the transformers streaming path."""
    dtype = next(model.parameters()).dtype
    prompt = torch.tensor([[1] + [32] * (32 + delay_tokens)], device=device)
    features = (f.to(device) for f in reference_features(audio, delay_tokens, dtype))
    out = model.generate(
        input_ids=prompt,
        input_features=features,
        num_delay_tokens=delay_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    ids = out.sequences[0, prompt.shape[1] :].tolist()
    logits = [step[0].float().cpu() for step in out.logits]
    return ids, logits


def reference_mel(padded_audio: np.ndarray) -> torch.Tensor:
    """The reference feature extractor on a whole padded clip: [128, frames]."""
    from transformers import VoxtralRealtimeFeatureExtractor

    fe = VoxtralRealtimeFeatureExtractor()
    return fe(padded_audio, sampling_rate=16000, return_tensors="pt").input_features[0]
