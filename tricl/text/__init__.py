"""Image-text pairs for CLIP-style training: captions, the BPE tokenizer and the text encoder.

- :mod:`tricl.text.captions`: ``mnist5k-captions`` (captions generated from each digit's label
  and measured thickness, slant and size), the ``captions:PATH.csv`` reader, :class:`ImageTextData`.
- :mod:`tricl.text.tokenizer`: a BPE tokenizer trained on the training captions, saved as the
  run's ``tokenizer.json``; captions to padded (N, L) token ids, truncations counted.
- :mod:`tricl.text.encoder`: a small Transformer text encoder with a projector to k features,
  rebuilt from its config dict.

- :mod:`tricl.text.model`: the image-text model the ``clip`` and ``triclip`` methods train (image
  encoder, text encoder, learnable logit scale), saved in one model.safetensors.

The losses (``clip``, ``triclip``) are in :mod:`tricl.losses`; the training loop's ``caption`` pair
kind (:mod:`tricl.train`) trains them.
"""
