"""The training application that ``scripts/`` drive, built on the pure core in `vae_jax`.

Each module owns one thing, and imports flow one way: the application imports the core
(`vae_jax.model`, `vae_jax.objectives`, …), never the reverse.

    configs          the presets and `validate`: the allowed value of every config field
    builders         the one module that turns a validated config into model, likelihood,
                     optimizer and hyperparameters
    training         the one training engine: a jitted step whose hyperparameters are arguments,
                     and the loop around it (a sweep is the same step vmapped over models)
    sweep            what only a sweep has: parsing the grid, naming members, extracting them
    run_folder       the one owner of a run folder: paths, the writer lock, metrics.jsonl,
                     config.json, eval.json, pictures and checkpoints (read-only for readers)
    checkpointing    Orbax checkpoints with their config, damaged ones detected
    runs             restoring a run's config, model and params for reading
    evaluation       one test-set preparation and one evaluator: ELBO terms, the IWAE bound
    data, input_pipeline, distributed   TFDS datasets, how batches reach devices, meshes
    plots, images    pictures
    prng             keys for training runs (a faster threefry on CPUs, `jax.random` elsewhere)
    cli              flags and one-line errors for the scripts
"""
