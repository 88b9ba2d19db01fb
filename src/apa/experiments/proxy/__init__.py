"""The real-data proof: the whole pipeline learns pronunciation scores from speechocean762 audio.

Pretrained Qwen2-Audio weights cannot be downloaded on these machines, so the paper's numbers
cannot be reproduced here. What can be shown is that the pipeline, end to end on the real
corpus, learns from the audio: a small Qwen2-Audio-shaped model trained from scratch with
our own `apa prepare` / `apa train` / `apa predict` / `apa evaluate`, against the same
model, trained and tested the same way, on audio that says nothing about the labels. A bug
anywhere (labels shifted, prompts mixed up between utterances, audio not reaching the text
model, metrics misaligned) shows up as a missing gap between the model and its controls.

Rows of the comparison (one test-set evaluation each, all 2,500 test utterances):

- ``model``: trained on the real training clips (those longer than the audio window are
  left out and counted), tested on every test clip (the few longer than the window are cut
  to it by the processor, with a warning, and counted).
- ``swapped``: the control. Every utterance's audio is replaced by another random
  utterance's of the same split (a derangement: no clip keeps its own audio), in training
  and in test, with the same training procedure: realistic speech carrying no information
  about the labels. The prompt still gives the utterance's own text.
- ``silence``: every clip replaced by near-silence (faint white noise at -54 dBFS, since
  `apa.data.audio` rightly refuses digital silence; 16-bit FLAC) of exactly the same number
  of samples: how much the duration alone explains.
- ``constant``: the training-set mean of every field for every item. PCC/SCC are undefined
  (zero variance); its RMSE is the floor a useful model must beat.
- ``human``: each of the five experts of ``resource/experts.json`` against the mean of the
  other four, on the same test utterances, averaged over the experts.

Model rows are decoded with constrained decoding, which gives both the most likely score
(``argmax``) and the expected score (``expected``, the probability-weighted mean).

Layout of OUT::

    data/            so762_{train,test}.jsonl (apa prepare), {row}_{train,test}.jsonl,
                     silence_audio/ID.flac
    init_model/      the random model every row starts from (apa tiny-model)
    ROW/train.yaml   the row's `apa train` config; ROW/train/ its run (ROW/train/model: the result)
    ROW/pred.jsonl   apa predict;  ROW/eval/ apa evaluate
    constant/        pred.jsonl and eval/ of the constant predictor
    human.json       the human-agreement numbers
    logs/            one log per command
    timings.json     wall time of every step
    results.json, results.md   the tables, the gaps and the exact commands

Modules: config (settings), controls (window fit, swapped audio, silence), baselines (constant,
duration, experts), runner (`apa` commands as logged, timed steps), experiment (the steps),
results (tables, paired differences, the criterion).

Every step whose output exists is skipped (an interrupted run continues where it stopped;
a skipped step keeps the wall time measured when it ran).
"""
