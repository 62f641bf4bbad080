"""Video data for laps_jax: TFDS builders, preparation, sampling, augmentation and the grain pipeline.

Kept import-light on purpose: preparation worker processes are started with `spawn` and import only
the module that holds their function (`video_decode`, `synthetic_motion`), never TFDS or JAX.

  - `video_decode`: PyAV decoding of a whole file into JPEG frames (preparation time) and JPEG
    decoding of the sampled frames (training time).
  - `builder_common`: the TFDS builder base shared by the video datasets (features, parallel
    preparation, the skip list).
  - `kinetics`, `ssv2`, `synthetic_motion`: the datasets; `registry`: name -> builder class.
  - `prepare`: `python -m laps_jax.data.prepare --dataset=NAME --manual_dir=DIR --data_dir=DIR`.
  - `frame_records`: the stored layout of builder 2.0.0 (one ArrayRecord record per frame).
  - `sampling`, `augment`, `mixup`: what the pipeline does to one clip / one batch on the host
    (uint8, plus the random numbers of the float augmentation); `device_augment`: the float
    augmentation inside the jitted steps.
  - `data_config` (the `config.data` keys), `datasets` (prepared data, generated under a lock),
    `transforms` (grain transforms), `loaders` (grain DataLoaders), `iterator_checkpoint` (Orbax
    args of the train iterator), `to_device` (`to_global`);
  - `pipeline`: the entry point for training, gathering the public names of those modules.
"""
