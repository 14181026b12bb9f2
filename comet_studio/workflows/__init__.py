"""Workflows above the algorithm: jobs that read folders and write folders, resumably.

- ``run.py``: a training run as a folder (the one call behind ``comet-studio train`` and the app);
- ``plant.py``: ``train-all``, one run per category of a plant, on an engine;
- ``bench/``: the contamination grid, the speed bench and the anomalib peers;
- ``predict/``: prediction over many images (the app's Test tab, ``comet-studio predict``, Ray).

They use ``comet_studio.core`` (the algorithm), ``comet_studio.engines`` (where jobs run) and
``comet_studio.viz`` (charts); core imports none of them.
"""
