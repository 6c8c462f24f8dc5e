"""End to end: audio streamed through front-end, encoder and CTC decoding."""

import pytest
import torch
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

from speechbrain_pom.decoders.ctc import (
    CTCGreedyStreamingContext,
    ctc_greedy_decode_streaming,
)
from speechbrain_pom.inference.streaming_encoder import StreamingEncoder
from speechbrain_pom.lobes.models.transformer.MixerTransformerASR import (
    MixerTransformerASR,
)
from speechbrain_pom.lobes.streaming_features import StreamingFrontEnd


def tiny_encoder(mixer):
    """The encoder for the tiny front-end of conftest.py."""
    torch.manual_seed(0)
    return MixerTransformerASR(
        tgt_vocab=1,
        input_size=20,  # 4 channels x 20 / 4 mel bins
        d_model=16,
        nhead=2,
        d_ffn=32,
        kernel_size=5,
        num_encoder_layers=2,
        num_decoder_layers=0,
        encoder_module="conformer",
        normalize_before=True,
        mixer=mixer,
    ).eval()


@pytest.mark.parametrize(
    "mixer, left_chunks", [("pom", None), ("pom", 1), ("summarymixing", None)]
)
def test_streamed_audio_equals_offline_encoding_and_decoding(
    tiny_frontend, mixer, left_chunks
):
    frontend, properties = tiny_frontend
    net = tiny_encoder(mixer)
    config = DynChunkTrainConfig(chunk_size=4, left_context_size=left_chunks)
    encoder = StreamingEncoder(StreamingFrontEnd(frontend, properties), net, config)
    ctc_lin = torch.nn.Linear(16, 5)
    audio = torch.randn(1, 16000 + 123)
    context = encoder.make_streaming_context()
    decoding = CTCGreedyStreamingContext()
    chunks, labels, start = [], [], 0
    with torch.no_grad():
        offline = net.encode(frontend(audio), dynchunktrain_config=config)
        for size in [3000, 777, 6400, 1, 5000, 10000]:
            final = start + size >= audio.shape[1]
            for chunk in encoder(audio[:, start : start + size], context, final):
                chunks.append(chunk)
                labels += ctc_greedy_decode_streaming(ctc_lin(chunk), decoding, 0)[0]
            start += size
        offline_labels = ctc_greedy_decode(ctc_lin(offline), torch.ones(1), 0)[0]
    assert {chunk.shape[1] for chunk in chunks[:-1]} == {4}
    torch.testing.assert_close(torch.cat(chunks, dim=1), offline, rtol=1e-5, atol=1e-5)
    assert labels == offline_labels and labels
